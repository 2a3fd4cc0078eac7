"""Benchmark: which features raise the survival model's cross-validated C-index (issue 6)?

Not a test: run it by hand (it needs GLIOMASUITE_DATA).

    GLIOMASUITE_DATA=../shared/data .venv/bin/python Testing/benchmarks/bench_survival_variants.py [--out FILE.json]

Every variant is scored exactly as ``gliomasuite fit-survival`` scores the shipped model: Harrell's
C-index on held-out patients, mean over 3 x 5-fold cross-validation (seed 0, the same folds for
every variant), the ridge penalty re-chosen inside each training fold (``cox.nested_cv``). A
variant is a list of columns of the cohort table with a transform each:

* the shipped model's features (age, five log volumes, WT/TC sphericity), the reduced and age-only
  models, for reference;
* extent of resection from the ``eor`` column as indicators with GTR as reference: ``STR`` and
  ``unknown`` (empty in the table), so an unknown resection is its own category, never read as GTR;
* nonlinear age: age^2, or a restricted cubic spline with fixed knots at 45, 60 and 72 years
  (fixed, so nothing is chosen from the data);
* more shape columns: WT/TC elongation and flatness, ET/NCR sphericity, percentages of brain
  (``pct*_brain`` need the brain volume, which a label map alone does not give, so they could not
  enter the shipped model; measured for information).

Choosing the best of many variants by their cross-validated C-index is itself optimistic, so the
benchmark also measures the whole procedure honestly: in every outer fold, the variant *and* its
penalty are chosen by an inner 5-fold cross-validation on the training patients only, and the
choice is scored on the held-out fold ("selected inside CV").

Rows a variant cannot use (one patient has no necrotic core, hence no NCR sphericity) are left out
for every variant, so all C-indices are on the same 235 patients and the same folds.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "GliomaSuite"))

from gliomasuite.survival import cox, fit  # noqa: E402

TABLE = "survival/brats2020_gt_shape_survival.csv"
AGE_KNOTS = (45.0, 60.0, 72.0)


def age_spline(age: np.ndarray) -> np.ndarray:
    """The nonlinear term of a restricted cubic spline in age (Harrell's form, 3 fixed knots)."""
    k1, k2, k3 = AGE_KNOTS
    def cube(v):
        return np.clip(v, 0, None) ** 3
    return (cube(age - k1) - cube(age - k2) * (k3 - k1) / (k3 - k2) + cube(age - k3) * (k2 - k1) / (k3 - k2)) \
        / (k3 - k1) ** 2


def columns(frame) -> dict:
    """Candidate feature columns (name -> array) from the cohort table."""
    age = frame["age"].to_numpy(float)
    eor = frame["eor"].fillna("").astype(str).str.strip().str.upper()
    out = {"age": age, "age_squared": (age - 60.0) ** 2, "age_spline": age_spline(age),
           "eor_STR": (eor == "STR").to_numpy(float), "eor_unknown": (eor == "").to_numpy(float)}
    for region in ("WT", "TC", "ET", "NCR", "ED"):
        out[f"log_{region}_vol"] = cox.TRANSFORMS["log1p_cm3"](frame[f"{region}_vol_mm3"].to_numpy(float))
    for name in ("WT_sphericity", "TC_sphericity", "ET_sphericity", "NCR_sphericity", "WT_elongation",
                 "WT_flatness", "TC_elongation", "TC_flatness", "pct1_brain", "pct2_brain", "pct4_brain",
                 "pctWT_brain", "pctTC_brain"):
        out[name] = frame[name].to_numpy(float)
    return out


AGE = ["age"]
VOLUMES = [f"log_{r}_vol" for r in ("WT", "TC", "ET", "NCR", "ED")]
V1 = AGE + VOLUMES + ["WT_sphericity", "TC_sphericity"]
EOR = ["eor_STR", "eor_unknown"]
SHAPE = ["WT_elongation", "WT_flatness", "TC_elongation", "TC_flatness"]
SPHERICITY = ["ET_sphericity", "NCR_sphericity"]
PCT = ["pct1_brain", "pct2_brain", "pct4_brain", "pctWT_brain", "pctTC_brain"]

#: name -> (columns, computable from a label map + age + optional EOR)
VARIANTS = {
    "age only": (AGE, True),
    "age + EOR": (AGE + EOR, True),
    "age + age^2": (AGE + ["age_squared"], True),
    "age + age spline": (AGE + ["age_spline"], True),
    "reduced: age + log volumes": (AGE + VOLUMES, True),
    "v1 full: age + log volumes + WT/TC sphericity": (V1, True),
    "v1 + EOR": (V1 + EOR, True),
    "v1 + age^2": (V1 + ["age_squared"], True),
    "v1 + age spline": (V1 + ["age_spline"], True),
    "v1 + WT/TC elongation, flatness": (V1 + SHAPE, True),
    "v1 + ET/NCR sphericity": (V1 + SPHERICITY, True),
    "v1 + EOR + age spline": (V1 + EOR + ["age_spline"], True),
    "v1 + EOR + age spline + shape + ET/NCR sphericity": (V1 + EOR + ["age_spline"] + SHAPE + SPHERICITY, True),
    "age + WT/TC sphericity": (AGE + ["WT_sphericity", "TC_sphericity"], True),
    "v1 + pct of brain (not computable from a label map)": (V1 + PCT, False),
}

def as_features(names):
    return [cox.feature(n, n) for n in names]


def selected_inside_cv(cvs: dict) -> dict:
    """Outer CV of the whole procedure 'pick the variant and penalty with the best inner CV C-index'.

    ``cvs`` maps each candidate variant to its ``cox.nested_cv`` result on the same folds and seeds:
    in each outer fold the variant with the best inner C-index (first in order on ties) is picked,
    and its model fitted on that fold's training patients, which nested_cv already scored on the
    held-out ones, gives the fold's C-index. Nothing is fitted again.
    """
    names = list(cvs)
    scores, picks = [], []
    for k in range(len(cvs[names[0]]["fold_cindex"])):
        name = max(names, key=lambda v: (cvs[v]["inner_cindex"][k], -names.index(v)))
        scores.append(cvs[name]["fold_cindex"][k])
        picks.append(name)
    return {"cindex_mean": float(np.mean(scores)), "cindex_sd": float(np.std(scores, ddof=1)),
            "fold_cindex": scores, "variants_picked": picks}


def main(argv=None):
    import os

    import pandas as pd

    parser = argparse.ArgumentParser()
    parser.add_argument("--table", help="cohort table (default: $GLIOMASUITE_DATA/" + TABLE + ")")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=float, nargs="+", default=list(fit.PENALIZER_GRID),
                        help="ridge penalties to choose from (default: fit-survival's)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if len(args.grid) < 2:
        parser.error("--grid needs at least two penalties: 'selected inside CV' picks by the inner C-index over them")
    table = args.table or Path(os.environ["GLIOMASUITE_DATA"]) / TABLE
    frame = pd.read_csv(table)
    data = columns(frame)
    needed = sorted({c for cols, _ in VARIANTS.values() for c in cols})
    keep = np.all([np.isfinite(data[c]) for c in needed], axis=0)
    frame = frame[keep].reset_index(drop=True)
    data = {k: v[keep] for k, v in data.items()}
    durations, events = frame["time_days"].to_numpy(float), frame["event"].to_numpy(int)
    print(f"{len(frame)} patients ({int((~keep).sum())} left out for a missing feature), {int(events.sum())} deaths; "
          f"EOR: {int((data['eor_STR'] == 0).sum() - data['eor_unknown'].sum())} GTR, {int(data['eor_STR'].sum())} STR, "
          f"{int(data['eor_unknown'].sum())} unknown")
    print(f"{args.repeats} x {args.folds}-fold CV, seed {args.seed}, penalty chosen inside each training fold "
          f"from {args.grid}\n")
    results, cvs = {}, {}
    for name, (cols, computable) in VARIANTS.items():
        start = time.time()
        x = np.column_stack([data[c] for c in cols])
        cv = cox.nested_cv(x, durations, events, as_features(cols), args.grid, args.folds, args.repeats, args.seed)
        cvs[name] = cv
        oof = fit.brats_accuracy(cv["oof_median"], durations, events)
        results[name] = {"columns": cols, "computable_from_label_map": computable,
                         "cv_cindex": round(cv["cindex_mean"], 4), "cv_cindex_sd": round(cv["cindex_sd"], 4),
                         "penalizers_chosen": cv["penalizers_chosen"], "brats_3class_accuracy": round(oof["accuracy"], 4)}
        print(f"{cv['cindex_mean']:.3f} ({cv['cindex_sd']:.3f})  3-class {oof['accuracy']:.3f}  {name}"
              f"{'' if computable else '  [not shippable]'}  ({time.time() - start:.0f} s)", flush=True)
    shippable = {k: cvs[k] for k, v in VARIANTS.items() if v[1]}
    honest = selected_inside_cv(shippable)
    picked = {k: honest["variants_picked"].count(k) for k in dict.fromkeys(honest["variants_picked"])}
    print(f"\n{honest['cindex_mean']:.3f} ({honest['cindex_sd']:.3f})  variant and penalty selected inside CV among "
          f"the {len(shippable)} shippable variants; picked: {picked}")
    if args.out:
        Path(args.out).write_text(json.dumps({"n": int(len(frame)), "folds": args.folds, "repeats": args.repeats,
                                              "seed": args.seed, "grid": args.grid, "variants": results,
                                              "selected_inside_cv": honest}, indent=1))


if __name__ == "__main__":
    main()
