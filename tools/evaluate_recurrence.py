"""Measure the recurrence model: held-out simulated series, the real progression pairs, a moved copy.

    GLIOMASUITE_DATA=../shared/data .venv/bin/python tools/evaluate_recurrence.py \\
        [--weights RUN/recurrence.npz | (the shipped model)] [--simulations DIR] \\
        [-o docs/recurrence-evaluation.json] [--figure docs/recurrence-reliability.png]

1. **Held-out simulated series**: series simulated from the validation baselines named in the weights
   (never trained on); every sample (visits 0..k, k = 1 and 2). P(recurrence): AUC with a bootstrap
   interval over baselines (the unit that was held out), accuracy, sensitivity and specificity at the
   0.5 threshold, Brier score, a reliability diagram. Beside it, in the same run on the same samples,
   two simple rules: the RANO volume call on the last two scans (the reader's mask grew by 40 % or
   more, or appeared, at least 1 cm3, where there was none) and a logistic regression on the growth
   rate of the mask (cm3/day between the last two scans), fitted on the training baselines' series.
   Where-next map: the share of the next visit's true tumour inside the map's top region, against a
   uniform margin of 5, 10 or 15 mm grown around the latest mask (inside the brain), at the same volume.
2. **Real progression pairs** (TCIA Brain-Tumor-Progression, 11 patients, all progressed; T1ce only):
   P(recurrence) from both scans (dates from supplementary.csv) and the map from the first scan alone
   against the second scan's mask, with the same margin comparison. Their headers say 1 mm; the
   slices are really several mm apart, so ``--slice-mm`` (default 5) is assumed: a stated guess.
3. **A real scan against a moved, resampled copy of itself** (validation baselines, their expert
   segmentation at both time points, 60 days apart), through ``gliomasuite.followup``: P(recurrence)
   should stay below the threshold.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "GliomaSuite"))

from gliomasuite.recurrence.dataset import SeriesSamples, series_path, simulate_cases  # noqa: E402
from gliomasuite.recurrence.inference import THRESHOLD, Visit, load_recurrence_model, predict_recurrence  # noqa: E402
from gliomasuite.recurrence.simulate import VOXEL_CM3  # noqa: E402
from gliomasuite.recurrence.training import _auc, predict_samples  # noqa: E402
from gliomasuite.recurrence.weights import load_recurrence_weights  # noqa: E402

MARGINS_MM = (5.0, 10.0, 15.0)
RANO_VOLUME_PD = 0.40


def bootstrap(groups, values_fn, reps=2000, seed=0):
    """95 % percentile interval of ``values_fn(indices)`` resampling whole groups (baselines)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    by = {g: np.flatnonzero(np.asarray(groups) == g) for g in names}
    out = []
    for _ in range(reps):
        pick = np.concatenate([by[names[i]] for i in rng.integers(len(names), size=len(names))])
        v = values_fn(pick)
        if np.isfinite(v):
            out.append(v)
    return [round(float(np.percentile(out, 2.5)), 3), round(float(np.percentile(out, 97.5)), 3)] if out else None


def rano_features(samples: SeriesSamples):
    """(relative change score, RANO call, growth rate cm3/day) of the reader's mask over the last two scans."""
    score, call, rate = [], [], []
    for i, (_, k) in samples.items:
        s = samples.series[i]
        v_prev, v_last = (float(s["masks"][j].sum()) * VOXEL_CM3 for j in (k - 1, k))
        dt = float(s["days"][k] - s["days"][k - 1])
        new = v_prev < 0.1 and v_last >= 1.0
        change = (v_last - v_prev) / v_prev if v_prev >= 0.1 else (10.0 if new else 0.0)
        score.append(change)
        call.append(bool(new or (v_prev >= 0.1 and change >= RANO_VOLUME_PD)))
        rate.append((v_last - v_prev) / dt)
    return np.array(score), np.array(call), np.array(rate)


def fit_logistic(x, y, iterations=100):
    """One-feature logistic regression by Newton's method (feature standardised); returns predict(x)."""
    mu, sd = float(np.mean(x)), float(np.std(x) + 1e-9)
    z = (np.asarray(x) - mu) / sd
    X = np.stack([np.ones_like(z), z], 1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-X @ w))
        grad = X.T @ (p - y) + 1e-3 * w
        hess = X.T @ (X * (p * (1 - p))[:, None]) + 1e-3 * np.eye(2)
        w -= np.linalg.solve(hess, grad)
    return lambda v: 1 / (1 + np.exp(-(w[0] + w[1] * (np.asarray(v) - mu) / sd))), w.tolist()


def coverage(prob_map, current, truth, brain, margin_mm, spacing_mm):
    """(map coverage, margin coverage, region cm3) of ``truth`` by equal-volume regions, or None."""
    if not truth.any() or not current.any():
        return None
    distance = ndimage.distance_transform_edt(~current, sampling=spacing_mm)
    margin = (distance <= margin_mm) & (brain | current)
    n = int(margin.sum())
    order = np.argsort(prob_map[brain | current], axis=None)[::-1][:n]
    region = np.zeros(int((brain | current).sum()), bool)
    region[order] = True
    top = np.zeros_like(current)
    top[brain | current] = region
    t = float(truth.sum())
    return float((top & truth).sum() / t), float((margin & truth).sum() / t), n * float(np.prod(spacing_mm)) / 1000


def _coverage_summary(cov: np.ndarray, groups=None) -> dict:
    if len(cov) == 0:
        return {"samples": 0}
    return {"samples": len(cov), "map_coverage_mean": round(float(cov[:, 0].mean()), 3),
            "margin_coverage_mean": round(float(cov[:, 1].mean()), 3),
            "map_better_in": int((cov[:, 0] > cov[:, 1] + 1e-9).sum()),
            "margin_better_in": int((cov[:, 1] > cov[:, 0] + 1e-9).sum()),
            "region_cm3_median": round(float(np.median(cov[:, 2])), 1)}


def reliability(probs, labels, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (probs >= a) & ((probs < b) if b < 1 else (probs <= b))
        if inside.any():
            rows.append({"bin": [round(a, 1), round(b, 1)], "n": int(inside.sum()),
                         "mean_predicted": round(float(probs[inside].mean()), 3),
                         "observed": round(float(labels[inside].mean()), 3)})
    return rows


def binary_metrics(called, labels):
    called, labels = np.asarray(called, bool), np.asarray(labels, bool)
    return {"accuracy": round(float(np.mean(called == labels)), 3),
            "sensitivity": round(float(called[labels].mean()), 3) if labels.any() else None,
            "specificity": round(float((~called[~labels]).mean()), 3) if (~labels).any() else None}


def simulated(model, meta, sim_dir, data_dir, figure):
    train_cases, val_cases = meta["train_cases"], meta["validation_cases"]
    per_case = int(meta["series_per_case"])
    simulate_cases(data_dir / "brats", val_cases, per_case, sim_dir)
    val = SeriesSamples([series_path(sim_dir, c, i) for c in val_cases for i in range(per_case)])
    train = SeriesSamples([series_path(sim_dir, c, i) for c in train_cases for i in range(per_case)
                           if series_path(sim_dir, c, i).is_file()])
    probs, labels, maps, targets = predict_samples(model, val)
    groups = [val.series[i]["meta"]["case"] for i, _ in val.items]
    score, call, rate = rano_features(val)
    _, _, train_rate = rano_features(train)
    train_labels = np.array([train.series[i]["recurrence"][k] for i, (_, k) in train.items], float)
    logistic, weights = fit_logistic(train_rate, train_labels)
    lr_probs = logistic(rate)
    pseudo = np.array([bool(val.series[i]["pseudo"][k]) for i, (_, k) in val.items])
    auc = lambda s: (lambda idx: _auc(s[idx], labels[idx]))  # noqa: E731
    diff = lambda a, b: (lambda idx: _auc(a[idx], labels[idx]) - _auc(b[idx], labels[idx]))  # noqa: E731
    result = {
        "validation_baselines": val_cases, "training_baselines": len(train_cases), "samples": len(val),
        "positives": int(labels.sum()), "samples_with_pseudoprogression_visible": int(pseudo.sum()),
        "model": {"auc": round(_auc(probs, labels), 3), "auc_95ci_over_baselines": bootstrap(groups, auc(probs)),
                  **binary_metrics(probs >= THRESHOLD, labels),
                  "brier": round(float(np.mean((probs - labels) ** 2)), 3),
                  "called_recurrence_where_only_pseudoprogression": int(((probs >= THRESHOLD) & pseudo & (labels == 0)).sum()),
                  "reliability": reliability(probs, labels)},
        "rano_volume_rule": {"auc_of_relative_change": round(_auc(score, labels), 3),
                             "auc_95ci_over_baselines": bootstrap(groups, auc(score)), **binary_metrics(call, labels),
                             "called_recurrence_where_only_pseudoprogression": int((call & pseudo & (labels == 0)).sum())},
        "logistic_growth_rate": {"auc": round(_auc(lr_probs, labels), 3),
                                 "auc_95ci_over_baselines": bootstrap(groups, auc(lr_probs)),
                                 **binary_metrics(lr_probs >= 0.5, labels), "fitted_on": "training baselines' series",
                                 "weights_standardised": [round(w, 3) for w in weights]},
        "auc_difference_model_minus_rano_95ci": bootstrap(groups, diff(probs, score)),
        "auc_difference_model_minus_logistic_95ci": bootstrap(groups, diff(probs, lr_probs)),
    }
    result["where_next_simulated"] = {"note": "samples whose next visit has tumour and whose latest scan has a mask; "
                                              "the map's top region has the margin's volume"}
    for margin_mm in MARGINS_MM:
        cov = []
        for n, (i, (_, k)) in enumerate(val.items):
            s = val.series[i]
            c = coverage(maps[n].astype(np.float32), s["masks"][k] > 0, targets[n], s["brain"].astype(bool), margin_mm,
                         (2.0, 2.0, 2.0))
            if c:
                cov.append(c)
        result["where_next_simulated"][f"margin_{margin_mm:g}mm"] = _coverage_summary(np.array(cov), groups=None)
    if figure:
        _figure(result, figure)
    return result


def _figure(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["model"]["reliability"]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    ax.plot([r["mean_predicted"] for r in rows], [r["observed"] for r in rows], "o-", label="recurrence model")
    for r in rows:
        ax.annotate(str(r["n"]), (r["mean_predicted"], r["observed"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel("predicted P(recurrence)")
    ax.set_ylabel("observed share recurring")
    ax.set_title(f"Held-out simulated series (n={result['samples']}, AUC {result['model']['auc']:.2f})", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _read_pgbm(folder: Path, name: str, slice_mm: float):
    image = sitk.ReadImage(str(folder / f"{name}.nii.gz"))
    spacing = list(image.GetSpacing())
    spacing[2] = slice_mm
    image.SetSpacing(spacing)
    return image


def real_pairs(model, data_dir, slice_mm):
    root = data_dir / "longitudinal" / "brain-tumor-progression"
    dates = {}
    for line in (root / "supplementary.csv").read_text().splitlines()[1:]:
        cells = [c.strip() for c in line.split(",")]
        dates[f"PGBM-{cells[0]}"] = (datetime.date.fromisoformat(cells[2]), datetime.date.fromisoformat(cells[3]))
    rows, per_margin = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        pre, post = (_read_pgbm(folder, f"{w}_Scan_T1", slice_mm) for w in ("Pre", "Post"))
        pre_mask, post_mask = (_read_pgbm(folder, f"{w}_Mask", slice_mm) for w in ("Pre", "Post"))
        first, second = dates[folder.name]
        interval = (second - first).days
        both = predict_recurrence([Visit("Pre", {"t1ce": pre}, pre_mask, 0.0),
                                   Visit("Post", {"t1ce": post}, post_mask, float(interval))], pre, model=model)
        one = predict_recurrence([Visit("Pre", {"t1ce": pre}, pre_mask, 0.0)], pre, model=model)
        head = sitk.GetArrayFromImage(pre) > np.percentile(sitk.GetArrayFromImage(pre), 20)
        covs = {m: coverage(sitk.GetArrayFromImage(one.map), sitk.GetArrayFromImage(pre_mask) > 0,
                            sitk.GetArrayFromImage(post_mask) > 0, head, m, tuple(reversed(pre.GetSpacing())))
                for m in MARGINS_MM}
        pre_v, post_v = (float(sitk.GetArrayViewFromImage(m).sum()) for m in (pre_mask, post_mask))
        rows.append({"patient": folder.name, "interval_days": interval,
                     "mask_growth": round(post_v / pre_v - 1, 3) if pre_v else None,
                     "probability": None if both.probability is None else round(both.probability, 3),
                     "called": both.called, "no_probability_because": both.reasons,
                     "coverage_map_vs_margin": {f"{m:g}mm": [round(c[0], 3), round(c[1], 3)] if c else None
                                                for m, c in covs.items()}})
        per_margin.append([covs[m] for m in MARGINS_MM])
    called = [r for r in rows if r["called"]]
    return {"assumed_slice_mm": slice_mm, "patients": len(rows), "called_recurrence": len(called),
            "no_probability": sum(r["probability"] is None for r in rows),
            "mask_grew_40pct_or_more": sum((r["mask_growth"] or 0) >= RANO_VOLUME_PD for r in rows),
            "where_next": {f"margin_{m:g}mm": _coverage_summary(np.array([row[i] for row in per_margin if row[i]]))
                           for i, m in enumerate(MARGINS_MM)},
            "rows": rows}


def moved_copies(data_dir, cases, recurrence_model=None):
    from gliomasuite.followup.pipeline import compare_timepoints
    from gliomasuite.followup.timepoints import TimePoint

    rows = []
    for case in cases:
        folder = data_dir / "brats" / case
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ref = sitk.ReadImage(str(folder / f"{case}_t1ce.nii.gz"))
            rotation = sitk.Euler3DTransform()
            rotation.SetCenter(ref.TransformContinuousIndexToPhysicalPoint([s / 2 for s in ref.GetSize()]))
            rotation.SetRotation(*np.deg2rad((6.0, -4.0, 3.0)))
            rotation.SetTranslation((5.0, -4.0, 3.0))
            moved = tmp / "moved"
            moved.mkdir()
            for key in ("t1", "t1ce", "t2", "flair", "seg"):
                image = sitk.ReadImage(str(folder / f"{case}_{key}.nii.gz"))
                interp = sitk.sitkNearestNeighbor if key == "seg" else sitk.sitkLinear
                sitk.WriteImage(sitk.Resample(image, image, rotation, interp, 0.0), str(moved / f"copy_{key}.nii.gz"))
            tps = [TimePoint("scan", {m: folder / f"{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")},
                             datetime.date(2021, 1, 1), seg=folder / f"{case}_seg.nii.gz"),
                   TimePoint("moved-copy", {m: moved / f"copy_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")},
                             datetime.date(2021, 3, 2), seg=moved / "copy_seg.nii.gz")]
            result = compare_timepoints(tps, tmp / "out", label_convention="brats2021",
                                        recurrence_model=recurrence_model)
        rec = result["recurrence"]
        rows.append({"case": case, "probability": rec.get("probability"), "called": rec.get("called"),
                     "reasons": rec.get("reasons")})
    return {"cases": rows, "below_threshold": sum(r["probability"] is not None and r["probability"] < THRESHOLD
                                                  for r in rows)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a trained recurrence.npz (default: the shipped model)")
    parser.add_argument("--data", default=os.environ.get("GLIOMASUITE_DATA"))
    parser.add_argument("--simulations", default=None, help="simulated series folder (made if missing)")
    parser.add_argument("--slice-mm", type=float, default=5.0)
    parser.add_argument("--moved-cases", type=int, default=3)
    parser.add_argument("-o", "--output")
    parser.add_argument("--figure")
    args = parser.parse_args()
    if not args.data:
        sys.exit("Set GLIOMASUITE_DATA or give --data.")
    data_dir = Path(args.data)
    if args.weights:
        model, meta = load_recurrence_weights(args.weights)
    else:
        model, entry = load_recurrence_model()
        _, meta = load_recurrence_weights(REPO / "GliomaSuite" / "gliomasuite" / "models" / entry["file"])
    sim_dir = Path(args.simulations or tempfile.mkdtemp(prefix="recurrence-sim-"))
    import torch

    torch.set_num_threads(2)
    report = {"weights": args.weights or "shipped", "simulated_held_out": simulated(model, meta, sim_dir, data_dir, args.figure),
              "real_progression_pairs": real_pairs(model, data_dir, args.slice_mm)}
    # the follow-up runs the candidate (args.weights) in place of the shipped model, same pipeline otherwise
    report["moved_copy"] = moved_copies(data_dir, meta["validation_cases"][:args.moved_cases], args.weights)
    text = json.dumps(report, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
