"""Fit the cohort survival models: a full and a reduced Cox model, each with its SOM.

``fit_cohort_model(table_csv)`` reads a cohort table (one row per patient: ``age``, ``time_days``,
``event`` and the shape columns of :mod:`gliomasuite.survival.features`) and fits

* the **full** model (:data:`FULL_FEATURES`): age, log(1 + volume in cm^3) of WT, TC, ET, NCR and
  ED, and the sphericity of WT and TC;
* the **reduced** model (:data:`REDUCED_FEATURES`): age and the five log volumes, for tables that
  carry only ``age`` and the five ``*_vol_mm3`` columns (what other tools export).

For each: the ridge penalty chosen by 5-fold cross-validated C-index; honest performance by nested
cross-validation (the penalty re-chosen inside every training fold) next to an age-only model on
the same folds; calibration of P(alive at 12 months) and the BraTS 3-class accuracy from the
out-of-fold predictions; the proportional-hazards check; the cohort's Kaplan-Meier curve and risk
tertiles; and a 10 x 10 SOM. Everything is returned as plain JSON-ready dicts
(:func:`write_models` writes them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from .. import __version__
from ..errors import GliomaSuiteError
from . import cox
from .som import fit_som, kaplan_meier, km_at

# BraTS survival classes: short < 10 months, mid 10-15, long > 15, taken as < 300, 300-450 and
# > 450 days, as BraTS survival papers count them.
from .score import BRATS_BINS_DAYS, BRATS_CLASSES, MONTH_DAYS  # noqa: E402
#: Best 3-class accuracy on the BraTS 2020 survival test set (the challenge's top entry).
BRATS2020_BEST_TEST_ACCURACY = 0.617

REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour", "NCR": "necrotic core",
                "ED": "edema"}

AGE_FEATURE = cox.feature("age", "age", "identity", "age (years)")
LOG_VOLUMES = [cox.feature(f"log_{r}_vol", f"{r}_vol_mm3", "log1p_cm3", f"log(1 + {REGION_NAMES[r]} volume in cm3)")
               for r in ("WT", "TC", "ET", "NCR", "ED")]
FULL_FEATURES = [AGE_FEATURE] + LOG_VOLUMES + [
    cox.feature("WT_sphericity", "WT_sphericity", "identity", "whole tumour sphericity"),
    cox.feature("TC_sphericity", "TC_sphericity", "identity", "tumour core sphericity")]
REDUCED_FEATURES = [AGE_FEATURE] + LOG_VOLUMES
AGE_ONLY = [AGE_FEATURE]

PENALIZER_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
DURATION, EVENT = "time_days", "event"


def read_cohort(table_csv, features: Sequence[dict], note: Callable[[str], None] = lambda m: None):
    """Rows usable for ``features``: (x, durations, events, subject ids, raw column arrays)."""
    import pandas as pd

    import io

    from ..tables_in import read_table_text

    path = Path(table_csv)
    text, separator = read_table_text(path, "cohort table")
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator)
    except Exception as exc:  # pandas raises many types for a malformed file
        raise GliomaSuiteError(f"{path} could not be read as a CSV table ({str(exc)[:80]}); give a comma-separated "
                               "table.") from None
    needed = [DURATION, EVENT] + cox.required_columns(features)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise GliomaSuiteError(f"{path} lacks the column(s) {shown}; add them (time_days = survival in days, "
                               "event = 1 death / 0 censored).")
    keep = np.ones(len(frame), dtype=bool)
    for c in needed:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            note(f"{int(bad.sum())} row(s) without a usable {c} left out of the fit")
        keep &= ~bad
    durations = pd.to_numeric(frame[DURATION], errors="coerce").to_numpy(dtype=float)
    events = pd.to_numeric(frame[EVENT], errors="coerce").to_numpy(dtype=float)
    bad_time = keep & ~(durations > 0)
    if bad_time.any():
        note(f"{int(bad_time.sum())} row(s) with time_days <= 0 left out of the fit")
        keep &= ~bad_time
    if not set(np.unique(events[keep])) <= {0.0, 1.0}:
        raise GliomaSuiteError(f"{path}: the event column must be 1 (death) or 0 (censored).")
    frame = frame[keep].reset_index(drop=True)
    if len(frame) < 30 or frame[EVENT].sum() < 20:
        raise GliomaSuiteError(f"{path} has {len(frame)} usable rows with {int(frame[EVENT].sum())} deaths; at least "
                               "30 patients and 20 deaths are needed to fit a survival model.")
    raw = {c: pd.to_numeric(frame[c]).to_numpy(dtype=float) for c in cox.required_columns(features)}
    x = np.column_stack([cox.TRANSFORMS[f["transform"]](raw[f["column"]]) for f in features])
    ids = [str(v) for v in frame["subject_id"]] if "subject_id" in frame.columns else [str(i) for i in range(len(frame))]
    return x, frame[DURATION].to_numpy(dtype=float), frame[EVENT].to_numpy(dtype=int), ids, raw


def brats_class(days) -> np.ndarray:
    """0 short (< 300 d), 1 mid (300-450 d), 2 long (> 450 d)."""
    days = np.asarray(days, dtype=float)
    return np.where(days < BRATS_BINS_DAYS[0], 0, np.where(days <= BRATS_BINS_DAYS[1], 1, 2))


def brats_accuracy(predicted_days, durations, events) -> dict:
    """3-class accuracy on patients whose true class is known (a death, or censored after 450 days)."""
    known = (np.asarray(events) == 1) | (np.asarray(durations) > BRATS_BINS_DAYS[1])
    truth = brats_class(np.asarray(durations)[known])
    predicted = brats_class(np.asarray(predicted_days)[known])
    majority = np.bincount(truth, minlength=3).max() / len(truth)
    confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(truth, predicted):
        confusion[t, p] += 1
    return {"accuracy": float(np.mean(truth == predicted)), "n": int(known.sum()),
            "majority_class_accuracy": float(majority),
            "confusion_true_by_predicted": confusion.tolist(), "classes": list(BRATS_CLASSES)}


def calibration(predicted, durations, events, horizon_days: float, groups: int = 5) -> dict:
    """Predicted P(alive at horizon) against the Kaplan-Meier estimate, by groups of predicted risk."""
    predicted = np.asarray(predicted, dtype=float)
    order = np.argsort(predicted)
    rows = []
    for part in np.array_split(order, groups):
        km = kaplan_meier(np.asarray(durations)[part], np.asarray(events)[part])
        times = np.asarray(km["times"])
        k = np.searchsorted(times, horizon_days, side="right") - 1
        rows.append({"n": int(len(part)), "predicted_mean": float(predicted[part].mean()),
                     "observed_km": float(km["survival"][k]), "observed_lower": float(km["lower"][k]),
                     "observed_upper": float(km["upper"][k])})
    overall = kaplan_meier(durations, events)
    gaps = [abs(r["predicted_mean"] - r["observed_km"]) for r in rows]
    return {"horizon_days": horizon_days, "groups": rows, "mean_abs_difference": float(np.mean(gaps)),
            "max_abs_difference": float(np.max(gaps)),
            "predicted_mean_all": float(predicted.mean()), "observed_km_all": km_at(overall, horizon_days),
            "source": "out-of-fold predictions (5-fold cross-validation, first repeat)"}


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fit_one(table_csv, features, variant: str, name: str, folds: int = 5, repeats: int = 3, seed: int = 0,
            grid: Sequence[float] = PENALIZER_GRID, som_iterations: int = 5000,
            age_only_cv: Optional[dict] = None, progress: Callable[[float, str], None] = lambda f, m: None,
            note: Callable[[str], None] = lambda m: None) -> dict:
    """One model (Cox + SOM + validation) as a JSON-ready dict."""
    x, durations, events, ids, raw = read_cohort(table_csv, features, note)
    horizon = 12 * MONTH_DAYS
    progress(0.05, f"{variant} model: choosing the penalty by {folds}-fold cross-validation")
    choice = cox.choose_penalizer(x, durations, events, features, grid, folds, seeds=range(seed, seed + repeats))
    progress(0.2, f"{variant} model: nested cross-validation ({repeats} x {folds} folds)")
    cv = cox.nested_cv(x, durations, events, features, grid, folds, repeats, seed, times_of_interest=[horizon])
    if age_only_cv is None:
        x_age = x[:, [i for i, f in enumerate(features) if f["name"] == "age"]]
        progress(0.5, "age-only baseline: nested cross-validation on the same folds")
        age_only_cv = cox.nested_cv(x_age, durations, events, AGE_ONLY, grid, folds, repeats, seed)
    progress(0.7, f"{variant} model: final fit, proportional-hazards check and SOM")
    model = cox.fit_cox(x, durations, events, features, choice["penalizer"])
    assumptions = cox.proportional_hazards_check(x, durations, events, features, choice["penalizer"])
    z = model.standardise(x)
    som = fit_som(z, durations, events, ids, iterations=som_iterations, seed=seed)
    lp = model.linear_predictor(x)
    cohort_km = kaplan_meier(durations, events)
    ranges = {c: [float(np.min(v)), float(np.max(v))] for c, v in raw.items()}
    validation = {
        "cv_cindex": {k: cv[k] for k in ("cindex_mean", "cindex_sd", "folds", "repeats", "fold_cindex")},
        "cv_penalizers_chosen": cv["penalizers_chosen"],
        "age_only_cv_cindex": {k: age_only_cv[k] for k in ("cindex_mean", "cindex_sd", "folds", "repeats")},
        "penalizer_selection": choice,
        "calibration_12_months": calibration(cv["oof_survival"][0], durations, events, horizon),
        "brats_3class": brats_accuracy(cv["oof_median"], durations, events),
        "brats_3class_age_only": brats_accuracy(age_only_cv["oof_median"], durations, events),
        "brats2020_best_test_accuracy": BRATS2020_BEST_TEST_ACCURACY,
        "note": ("C-index: mean over folds of Harrell's C on held-out patients, the penalty re-chosen inside each "
                 "training fold (nested cross-validation); age-only model on the same folds."),
    }
    return {
        "format": cox.FORMAT, "format_version": cox.FORMAT_VERSION, "kind": "survival-model",
        "name": name, "variant": variant,
        "description": ("Cox model on age and tumour shape (" + ", ".join(f["label"] for f in features) + ")"),
        "columns": cox.required_columns(features),
        "cox": model.to_json(), "som": som.to_json(),
        "cohort": {"table": Path(table_csv).name, "table_sha256": _sha256(table_csv), "n": int(len(durations)),
                   "events": int(events.sum()), "column_ranges": ranges, "km": cohort_km,
                   "median_days": cohort_km["median"],
                   "risk_tertiles": [float(np.quantile(lp, 1 / 3)), float(np.quantile(lp, 2 / 3))],
                   "time_unit": "days", "month_days": MONTH_DAYS},
        "validation": validation, "assumptions": assumptions,
        "created_by": {"gliomasuite": __version__, "lifelines": model.data["lifelines_version"],
                       "seed": seed, "folds": folds, "repeats": repeats, "penalizer_grid": list(grid),
                       "som_iterations": som_iterations},
    }, age_only_cv


def fit_cohort_model(table_csv, name: str = "survival", folds: int = 5, repeats: int = 3, seed: int = 0,
                     grid: Sequence[float] = PENALIZER_GRID, som_iterations: int = 5000,
                     progress: Callable[[float, str], None] = lambda f, m: None,
                     note: Callable[[str], None] = lambda m: None) -> dict:
    """Fit the full and the reduced model on one cohort table; returns
    ``{"full": model, "reduced": model, "summary": {...}}`` (models are JSON-ready dicts)."""
    def stage(lo, hi):
        return lambda f, m: progress(lo + (hi - lo) * f, m)

    full, age_cv = fit_one(table_csv, FULL_FEATURES, "full", name, folds, repeats, seed, grid, som_iterations,
                           progress=stage(0.0, 0.6), note=note)
    reduced, _ = fit_one(table_csv, REDUCED_FEATURES, "reduced", name + "-reduced", folds, repeats, seed, grid,
                         som_iterations, age_only_cv=age_cv, progress=stage(0.6, 1.0), note=note)
    summary = {}
    for variant, model in (("full", full), ("reduced", reduced)):
        v = model["validation"]
        summary[variant] = {
            "cv_cindex": round(v["cv_cindex"]["cindex_mean"], 4), "cv_cindex_sd": round(v["cv_cindex"]["cindex_sd"], 4),
            "age_only_cv_cindex": round(v["age_only_cv_cindex"]["cindex_mean"], 4),
            "penalizer": model["cox"]["penalizer"],
            "calibration_12m_mean_abs_difference": round(v["calibration_12_months"]["mean_abs_difference"], 4),
            "brats_3class_accuracy": round(v["brats_3class"]["accuracy"], 4),
            "ph_violations": model["assumptions"]["violated"]}
    return {"full": full, "reduced": reduced, "summary": summary}


def write_models(result: dict, out_dir, name: str, stage=None) -> dict:
    """Write ``NAME.json`` (full) and ``NAME-reduced.json`` (with ``stage``, left for its commit); returns their
    paths."""
    from ..outputs import write_json_atomically

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"full": out / f"{name}.json", "reduced": out / f"{name}-reduced.json"}
    for variant, path in paths.items():
        model = dict(result[variant])
        model["name"] = path.stem
        write_json_atomically(model, path, indent=None, stage=stage)
    return {k: str(v) for k, v in paths.items()}


def _coefficient_table(model: dict) -> List[str]:
    lines = ["| feature | coefficient per SD | hazard ratio per SD (95% CI) | p | SD of the feature |",
             "|---|---:|---:|---:|---:|"]
    for c in model["cox"]["summary"]:
        lo, hi = c["hr_95ci"]
        lines.append(f"| {c['label']} | {c['coef_per_sd']:+.3f} | {c['hazard_ratio_per_sd']:.2f} ({lo:.2f}-{hi:.2f}) "
                     f"| {c['p']:.3g} | {c['sd']:.3g} |")
    return lines


def model_card(result: dict, command: str, target_cindex: float = 0.68) -> str:
    """The model card (Markdown) of a fitted pair of models; every number is read from ``result``."""
    full, reduced = result["full"], result["reduced"]
    v, vr = full["validation"], reduced["validation"]
    co = full["cohort"]
    cv, age = v["cv_cindex"], v["age_only_cv_cindex"]
    reached = "reaches" if cv["cindex_mean"] >= target_cindex else "does not reach"
    lines = [
        f"# Survival model card: {full['name']}",
        "",
        "Cox proportional-hazards model (lifelines, Breslow baseline, ridge penalty) of overall survival on age and",
        "tumour shape from a BraTS label map, with a 10 x 10 self-organising map of the same cohort. A reduced",
        f"companion model (`{reduced['name']}.json`) uses age and the five volumes only, for tables that carry",
        "nothing else; outputs always say which model scored them. Plain JSON (no pickle), format version "
        f"{full['format_version']}.",
        "",
        "**Intended use**: research and decision support for adult high-grade glioma, read as group estimates",
        "(curves, medians with intervals, probabilities at fixed times). Its discrimination is modest (below);",
        "it does not know molecular markers (IDH, MGMT), treatment or extent of resection.",
        "",
        "## Data",
        f"- `{co['table']}` (sha256 `{co['table_sha256'][:16]}...`): {co['n']} BraTS 2020 high-grade glioma patients,",
        f"  {co['events']} deaths, {co['n'] - co['events']} censored; age {co['column_ranges']['age'][0]:.1f}-"
        f"{co['column_ranges']['age'][1]:.1f} years; cohort median survival {co['median_days']:.0f} days "
        f"({co['median_days'] / MONTH_DAYS:.1f} months).",
        "- Features computed from the expert label maps with the definitions of `gliomasuite.survival.features`",
        "  (which reproduce the table's columns to float32 precision on the 11 shared BraTS 2018 cases).",
        "",
        "## Features",
        "Each standardised by the cohort's mean and SD (stored in the model) before fitting:",
        "",
    ]
    for f in full["cox"]["features"]:
        lines.append(f"- `{f['name']}`: {f['label']} (from column `{f['column']}`, transform `{f['transform']}`)")
    lines += ["", f"## Coefficients: full model (penalizer {full['cox']['penalizer']:g})", ""]
    lines += _coefficient_table(full)
    lines += ["", f"Hazard ratios are per one SD of the feature; the ridge penalty shrinks them towards 1 and "
              "the intervals are lifelines' (Wald) intervals for the penalised fit.", "",
              f"## Coefficients: reduced model (penalizer {reduced['cox']['penalizer']:g})", ""]
    lines += _coefficient_table(reduced)
    sel = v["penalizer_selection"]["grid"]
    lines += ["", "## Cross-validated performance", "",
              "Harrell's C-index on held-out patients, mean (SD) over "
              f"{cv['repeats']} x {cv['folds']}-fold cross-validation; the penalty is re-chosen inside each training "
              "fold (nested), and the age-only model is scored on the same folds.", "",
              "| model | CV C-index |", "|---|---:|",
              f"| age only | {age['cindex_mean']:.3f} ({age['cindex_sd']:.3f}) |",
              f"| reduced: age + log volumes | {vr['cv_cindex']['cindex_mean']:.3f} ({vr['cv_cindex']['cindex_sd']:.3f}) |",
              f"| **full: age + log volumes + WT/TC sphericity** | **{cv['cindex_mean']:.3f}** ({cv['cindex_sd']:.3f}) |",
              "",
              f"The full model {reached} the target C-index of {target_cindex} (issue 6); it adds "
              f"{cv['cindex_mean'] - age['cindex_mean']:+.3f} to age alone. Penalty selection on the whole cohort "
              "(mean CV C-index per penalizer): " + ", ".join(f"{g['penalizer']:g}: {g['cv_cindex']:.3f}" for g in sel) + ".",
              "", "## Calibration at 12 months", "",
              f"Out-of-fold predicted P(alive at 12 months) against the Kaplan-Meier estimate, by fifths of predicted "
              f"survival (plot: `{full['name']}-calibration.png`):", "",
              "| patients | predicted | observed (KM, 95% CI) |", "|---:|---:|---:|"]
    cal = v["calibration_12_months"]
    for g in cal["groups"]:
        lines.append(f"| {g['n']} | {g['predicted_mean']:.2f} | {g['observed_km']:.2f} "
                     f"({g['observed_lower']:.2f}-{g['observed_upper']:.2f}) |")
    lines += ["", f"Mean absolute difference {cal['mean_abs_difference']:.3f} (largest {cal['max_abs_difference']:.3f}); "
              f"whole cohort: predicted {cal['predicted_mean_all']:.3f}, observed {cal['observed_km_all']:.3f}. Reduced "
              f"model: mean absolute difference {vr['calibration_12_months']['mean_abs_difference']:.3f}.", "",
              "## BraTS 3-class accuracy", ""]
    b, ba = v["brats_3class"], v["brats_3class_age_only"]
    lines += [f"Predicted median survival binned into short (<10 months, <300 days), mid (10-15 months) and long "
              f"(>15 months, >450 days), out-of-fold, on the {b['n']} patients whose class is known:", "",
              "| model | accuracy |", "|---|---:|",
              f"| majority class | {b['majority_class_accuracy']:.3f} |",
              f"| age only | {ba['accuracy']:.3f} |",
              f"| reduced | {vr['brats_3class']['accuracy']:.3f} |",
              f"| full | {b['accuracy']:.3f} |",
              f"| BraTS 2020 challenge, best test-set accuracy (other data, for reference) | {BRATS2020_BEST_TEST_ACCURACY} |",
              "", "Confusion (rows true short/mid/long, columns predicted): " + str(b["confusion_true_by_predicted"]) + ".",
              "", "## Proportional-hazards check", "", full["assumptions"]["verdict"], "",
              "| feature | Schoenfeld test p (rank time) |", "|---|---:|"]
    for t in full["assumptions"]["tests"]:
        lines.append(f"| {t['feature']} | {t['p']:.3g} |")
    s = full["som"]
    lines += ["", "Reduced model: " + reduced['assumptions']['verdict'][0].lower() + reduced['assumptions']['verdict'][1:], "",
              "## Self-organising map", "",
              f"{s['rows']} x {s['cols']} minisom grid on the full model's standardised features (PCA initialisation, "
              f"seed {s['training']['seed']}, {s['training']['iterations']} iterations, Gaussian neighbourhood, sigma "
              f"{s['training']['sigma']}): {s['occupied_nodes']} nodes hold patients; quantisation error "
              f"{s['quantization_error']:.3f}, topographic error {s['topographic_error']:.3f}. Each node stores its "
              "members, deaths and Kaplan-Meier curve, and a neighbourhood curve pooling adjacent nodes until at least "
              f"{s['training']['min_members_for_neighbourhood_curve']} patients.", "",
              "## Reproduce", "", "```", command, "```", "",
              f"gliomasuite {full['created_by']['gliomasuite']}, lifelines {full['created_by']['lifelines']}, seed "
              f"{full['created_by']['seed']}, penalizer grid {full['created_by']['penalizer_grid']}.", "",
              "## Limitations", "",
              "- One cohort (BraTS 2020 training, multi-institutional, pre-operative scans of high-grade glioma); "
              "only one patient is censored, so the model has not seen long-term survivors followed without an event.",
              "- Fitted on expert segmentations: features from an automatic segmentation differ where it errs.",
              "- The 95% band of a patient's curve is approximate (coefficient and baseline uncertainty, their "
              "covariance ignored).", ""]
    return "\n".join(lines)
