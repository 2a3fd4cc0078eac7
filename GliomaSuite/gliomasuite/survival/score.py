"""Score patients with a shipped survival model, in numbers and in words a clinician can read.

For one patient (a table row, a features dict or a label map plus age) :func:`score_features`
returns: the model used and why; the risk score (Cox linear predictor, relative to the cohort's
average patient) with its hazard ratio, percentile and risk group (cohort tertiles); the survival
curve with its approximate 95% band; median survival with a 95% interval where the data allow one;
P(alive) at 6, 12, 18 and 24 months; the BraTS 3-class bin of the predicted median (<10, 10-15,
>15 months); the patient's SOM node with its cohort members' Kaplan-Meier curve; and one paragraph
in words. Nothing here needs lifelines or minisom: models are plain JSON read with numpy.

Model choice: the full model (age, five log volumes, WT and TC sphericity) when every input it
needs is present; otherwise the reduced model (age and the five volumes) and the output says so
and why (for instance a label map without tumour core has no core sphericity). A missing or
invalid value is never filled in: the row or patient is refused with the reason.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import __version__
from ..errors import GliomaSuiteError
from ..outputs import write_file_atomically, write_json_atomically
from ..registry import DEFAULT_SURVIVAL_MODEL, MODELS_DIR
from . import cox
from .som import SurvivalSOM

DEFAULT_MODEL = DEFAULT_SURVIVAL_MODEL
MONTH_DAYS = 365.25 / 12.0
P_ALIVE_MONTHS = (6, 12, 18, 24)
BRATS_BINS_DAYS = (300.0, 450.0)
BRATS_CLASSES = ("short (<10 months)", "mid (10-15 months)", "long (>15 months)")
RISK_GROUPS = ("low", "intermediate", "high")


class SurvivalModel:
    """A shipped survival model: Cox model, SOM and cohort summary, from plain JSON."""

    def __init__(self, data: Mapping, source: str = "the survival model"):
        if data.get("format") != cox.FORMAT or data.get("kind") != "survival-model":
            raise GliomaSuiteError(f"{source} is not a GliomaSuite survival model file.")
        self.data = dict(data)
        self.source = source
        self.name = data["name"]
        self.variant = data["variant"]
        self.cox = cox.CoxModel(data["cox"])
        self.som = SurvivalSOM(data["som"])
        self.cohort = data["cohort"]

    @classmethod
    def load(cls, name_or_path=None) -> "SurvivalModel":
        name_or_path = name_or_path or DEFAULT_MODEL
        path = Path(name_or_path)
        if not path.suffix:
            path = MODELS_DIR / f"{name_or_path}.json"
        if not path.exists():
            known = sorted(p.stem for p in MODELS_DIR.glob("survival-*.json")) if MODELS_DIR.exists() else []
            raise GliomaSuiteError(f"No survival model {name_or_path!r} (shipped models: "
                                   f"{', '.join(known) or 'none'}); give a model name or a model .json file.")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GliomaSuiteError(f"{path} could not be read as a survival model ({exc}).") from None
        return cls(data, str(path))

    @property
    def columns(self) -> List[str]:
        return self.cox.columns

    @property
    def cv_cindex(self) -> float:
        return float(self.data["validation"]["cv_cindex"]["cindex_mean"])

    def describe(self) -> str:
        return (f"{self.name} ({self.variant} model: " + ", ".join(f["label"] for f in self.cox.features) +
                f"; fitted on {self.cohort['n']} patients of {self.cohort['table']})")


def load_models(name_or_path=None) -> Tuple[SurvivalModel, Optional[SurvivalModel]]:
    """The full model and its reduced companion (``NAME-reduced.json`` beside it, if present)."""
    full = SurvivalModel.load(name_or_path)
    reduced_path = Path(full.source).with_name(Path(full.source).stem + "-reduced.json")
    if full.variant == "reduced":
        return full, full
    reduced = SurvivalModel.load(reduced_path) if reduced_path.exists() else None
    return full, reduced


def brats_class_of(days: float) -> str:
    if days < BRATS_BINS_DAYS[0]:
        return BRATS_CLASSES[0]
    return BRATS_CLASSES[1] if days <= BRATS_BINS_DAYS[1] else BRATS_CLASSES[2]


def _months(days) -> Optional[float]:
    return None if days is None or not math.isfinite(days) else round(days / MONTH_DAYS, 1)


def _finite_or_none(value) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def score_values(values: Mapping, model: SurvivalModel, why: str = "") -> dict:
    """Score one patient whose inputs (column -> value) the model's columns all have."""
    x = cox.design_matrix([values], model.cox.features)
    inputs = {c: float(values[c]) for c in model.columns}
    warnings = []
    for column, (lo, hi) in model.cohort["column_ranges"].items():
        v = inputs[column]
        if v < lo or v > hi:
            warnings.append(f"{column} = {v:g} is outside the fitting cohort's range ({lo:g} to {hi:g}): "
                            "the prediction extrapolates.")
    lp = float(model.cox.linear_predictor(x)[0])
    times = np.concatenate([[0.0], model.cox.times])
    s, lower, upper = (np.concatenate([[1.0], a[:, 0]]) for a in model.cox.survival_band(x, model.cox.times))
    lower = np.minimum.accumulate(lower)  # keep the displayed band monotone
    upper = np.minimum.accumulate(upper)
    median = float(cox.first_time_below(times, s, 0.5)[0])
    median_lo = float(cox.first_time_below(times, lower, 0.5)[0])
    median_hi = float(cox.first_time_below(times, upper, 0.5)[0])
    follow_up = float(model.cox.times[-1])
    p_alive = {}
    for months in P_ALIVE_MONTHS:
        t = months * MONTH_DAYS
        if t > follow_up:
            p_alive[str(months)] = None
            continue
        sb, lb, ub = model.cox.survival_band(x, [t])
        p_alive[str(months)] = {"p": round(float(sb[0, 0]), 4), "lower": round(float(lb[0, 0]), 4),
                                "upper": round(float(ub[0, 0]), 4)}
    tertiles = model.cohort["risk_tertiles"]
    group = RISK_GROUPS[int(lp > tertiles[0]) + int(lp > tertiles[1])]
    z = model.cox.standardise(x)[0]
    row, col = model.som.bmu(z)
    node = model.som.node(row, col)
    hood = node["neighbourhood"]
    result = {
        "model": {"name": model.name, "variant": model.variant, "description": model.describe(),
                  "cv_cindex": round(model.cv_cindex, 3), "why": why or f"all inputs of the {model.variant} model given"},
        "inputs": inputs,
        "risk_score": round(lp, 4),
        "hazard_ratio_vs_cohort_average": round(math.exp(lp), 3),
        "risk_group": group,
        "risk_group_rule": "tertiles of the fitting cohort's risk scores",
        "median_survival": {"days": _finite_or_none(median), "months": _months(median),
                            "ci95_days": [_finite_or_none(median_lo), _finite_or_none(median_hi)],
                            "ci95_months": [_months(median_lo), _months(median_hi)],
                            "estimable": math.isfinite(median),
                            "follow_up_days": follow_up},
        "p_alive": p_alive,
        "brats_class": brats_class_of(median) if math.isfinite(median) else BRATS_CLASSES[2],
        # "node" indexes the grid from 0 (as numpy and minisom do); words, plots and tables name the node
        # from 1, as "node_label" ("row,column") does, so a reader and a program agree on which node it is.
        "som": {"node": [row, col], "node_label": f"{row + 1},{col + 1}", "grid": [model.som.rows, model.som.cols],
                "grid_counts": model.som.grid_counts().tolist(), "n": node["n"],
                "events": node["events"], "subject_ids": node["subject_ids"],
                "km": node["km"],
                "neighbourhood": {"radius": hood["radius"], "n": hood["n"], "events": hood["events"],
                                  "median_days": hood["km"]["median"], "median_months": _months(hood["km"]["median"]),
                                  "km": hood["km"]}},
        "curve": {"times_days": times.tolist(), "survival": s.tolist(), "lower": lower.tolist(),
                  "upper": upper.tolist(),
                  "band": "approximate 95% band (coefficient and baseline-hazard uncertainty; see cox.py)"},
        "cohort": {"n": model.cohort["n"], "events": model.cohort["events"],
                   "median_days": model.cohort["median_days"], "median_months": _months(model.cohort["median_days"]),
                   "km": model.cohort["km"]},
        "warnings": warnings,
    }
    result["sentence"] = sentence(result)
    return result


def _pct(p: Optional[dict]) -> str:
    return "not estimable" if p is None else f"{100 * p['p']:.0f}% (95% CI {100 * p['lower']:.0f}-{100 * p['upper']:.0f}%)"


def sentence(result: Mapping) -> str:
    """The result in words."""
    age = result["inputs"].get("age")
    wt = result["inputs"].get("WT_vol_mm3")
    who = f"For a {age:g}-year-old patient" + (f" with a {wt / 1000:.1f} cm3 tumour (whole tumour)" if wt else "")
    m = result["median_survival"]
    lo, hi = m["ci95_months"]
    if m["estimable"]:
        interval = (f" (95% CI {lo:.1f} to {hi:.1f} months)" if lo is not None and hi is not None else
                    f" (95% CI from {lo:.1f} months; the upper limit lies beyond the cohort's follow-up)"
                    if lo is not None else "")
        median = f"the expected median survival is {m['months']:.1f} months{interval}"
    else:
        median = (f"the median survival is beyond the cohort's follow-up "
                  f"({m['follow_up_days'] / MONTH_DAYS:.0f} months) and cannot be estimated")
    p12, p24 = result["p_alive"].get("12"), result["p_alive"].get("24")
    hood = result["som"]["neighbourhood"]
    similar = (f"The {hood['n']} most similar cohort patients (self-organising map node "
               f"{result['som']['node_label']}, row and column counted from 1, and its neighbours) had a median survival of "
               f"{hood['median_months']:.1f} months." if hood["median_months"] is not None else
               f"Fewer than half of the {hood['n']} most similar cohort patients died during follow-up.")
    return (f"{who}, {median}; the chance of being alive is {_pct(p12)} at 12 months and {_pct(p24)} at 24 months. "
            f"Risk group: {result['risk_group']} (hazard {result['hazard_ratio_vs_cohort_average']:.2f} times the "
            f"cohort's average patient); BraTS survival class: {result['brats_class']}. {similar} "
            f"Model: {result['model']['variant']} ({result['model']['why']}), cross-validated C-index "
            f"{result['model']['cv_cindex']:.2f}: these are estimates for groups of similar patients, not a "
            "prediction for this individual.")


def score_features(values: Mapping, full: SurvivalModel, reduced: Optional[SurvivalModel] = None,
                   age=None) -> dict:
    """Score a patient from a dict of inputs, with the full model if it can, else the reduced one."""
    values = dict(values)
    if age is not None:
        values["age"] = age
    cox.check_value("age", values.get("age"))
    missing = [c for c in full.columns if not _usable(values.get(c))]
    if not missing:
        return score_values(values, full)
    if reduced is None:
        raise GliomaSuiteError(f"{', '.join(missing)} missing, and no reduced model is installed to score without it.")
    why = (f"{', '.join(missing)} not available (an empty region has no shape), so the reduced model "
           "(age and volumes) was used")
    return score_values(values, reduced, why)


def _usable(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# tables

ID_COLUMNS = ("subject_id", "case", "case_id", "patient", "patient_id", "id", "brats20id")
OUTPUT_COLUMNS = ("model", "risk_score", "hazard_ratio", "risk_group", "median_days", "median_lower_days",
                  "median_upper_days", "median_months", "p_alive_6m", "p_alive_12m", "p_alive_18m", "p_alive_24m",
                  "brats_class", "som_node", "note")


def _read_table(path: Path):
    import io

    from ..tables_in import read_table_text

    text, separator = read_table_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=separator)
    header = reader.fieldnames or []
    rows = list(reader)
    if not header:
        raise GliomaSuiteError(f"{path} is empty; give a CSV table with a header row.")
    if not rows:
        raise GliomaSuiteError(f"{path} has a header but no rows to score.")
    return header, rows


def choose_table_model(header: Sequence[str], full: SurvivalModel, reduced: Optional[SurvivalModel], source: str):
    """(model, why, column map) for a table's header, or a :class:`GliomaSuiteError` naming what is missing."""
    lower = {h.strip().lower(): h for h in header}
    def mapping(model):
        return {c: lower.get(c.lower()) for c in model.columns}

    full_map = mapping(full)
    if all(full_map.values()):
        return full, "the table has every column of the full model", full_map
    if reduced is not None:
        red_map = mapping(reduced)
        if all(red_map.values()):
            lacking = [c for c, h in full_map.items() if not h]
            return reduced, ("the table has age and the five volumes but not " + ", ".join(lacking) +
                             ", so the reduced model (age + volumes) was used"), red_map
        needed = [c for c, h in red_map.items() if not h]
    else:
        needed = [c for c, h in full_map.items() if not h]
    known = {c.lower() for c in full.columns} | {c.lower() for c in ID_COLUMNS}
    unknown = [h for h in header if h.strip().lower() not in known]
    extra = (f" Columns not recognised: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}."
             if unknown else "")
    raise GliomaSuiteError(
        f"{source} lacks the column(s) {', '.join(needed)} (volumes in mm3); rename or add them.{extra}")


def score_table(table_csv, output_csv, model=None, note=lambda m: None) -> dict:
    """Score every row of a table into ``output_csv``; returns a summary (model used, counts)."""
    path = Path(table_csv)
    header, rows = _read_table(path)
    full, reduced = load_models(model)
    chosen, why, column_map = choose_table_model(header, full, reduced, str(path))
    note(f"Scoring {len(rows)} row(s) with {chosen.name}: {why}.")
    id_column = next((h for h in header if h.strip().lower() in ID_COLUMNS), None)
    out_rows, failed = [], 0
    for i, row in enumerate(rows):
        values = {c: row.get(h) for c, h in column_map.items()}
        out = {"row": i + 1}
        if id_column:
            out[id_column] = row.get(id_column, "")
        try:
            r = score_values(values, chosen, why)
        except GliomaSuiteError as exc:
            failed += 1
            out.update({c: "" for c in OUTPUT_COLUMNS})
            out["model"] = chosen.name
            out["note"] = f"not scored: {exc}"
            out_rows.append(out)
            continue
        m = r["median_survival"]
        pa = r["p_alive"]
        out.update({
            "model": chosen.name, "risk_score": r["risk_score"], "hazard_ratio": r["hazard_ratio_vs_cohort_average"],
            "risk_group": r["risk_group"], "median_days": _blank(m["days"]),
            "median_lower_days": _blank(m["ci95_days"][0]), "median_upper_days": _blank(m["ci95_days"][1]),
            "median_months": _blank(m["months"]),
            **{f"p_alive_{k}m": ("" if pa[str(k)] is None else pa[str(k)]["p"]) for k in P_ALIVE_MONTHS},
            "brats_class": r["brats_class"], "som_node": r["som"]["node_label"],  # row,column from 1, as the words say
            "note": "; ".join([why] + r["warnings"])})
        out_rows.append(out)
    if failed == len(rows):
        first = out_rows[0]["note"]
        raise GliomaSuiteError(f"No row of {path} could be scored; the first: {first}")
    for out in out_rows:
        out["gliomasuite_version"] = __version__
    fields = ["row"] + ([id_column] if id_column else []) + list(OUTPUT_COLUMNS) + ["gliomasuite_version"]
    output = Path(output_csv)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(out_rows)

    write_file_atomically(write, output, ".csv")
    return {"output": str(output), "model": chosen.name, "model_variant": chosen.variant, "why": why,
            "rows": len(rows), "scored": len(rows) - failed, "not_scored": failed}


def _blank(value):
    return "" if value is None else value


# ----------------------------------------------------------------------------------------------
# one patient from a label map


def score_label_map(seg, age, out_dir=None, model=None, note=lambda m: None, source=None, models=None) -> dict:
    """Features of a label map (a file or a SimpleITK image) + age, scored; with ``out_dir``, also
    written as ``survival.json`` and ``survival.png`` there (:func:`write_patient_result`).

    ``source`` is what the result names as the segmentation (default: the label map's path).
    ``models`` is a ``(full, reduced)`` pair already loaded by :func:`load_models` (else ``model`` is loaded).
    """
    from .features import label_map_features

    age = cox.check_value("age", age)
    full, reduced = models or load_models(model)
    features = label_map_features(seg)
    result = score_features(features["shape"], full, reduced, age=age)
    result["features"] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in features["shape"].items()}
    result["location"] = features["location"]
    result["warnings"] = features["warnings"] + result["warnings"]
    result["segmentation"] = str(source if source is not None else seg)
    for w in result["warnings"]:
        note(w)
    if out_dir is not None:
        write_patient_result(result, out_dir)
    return result


def write_patient_result(result: dict, out_dir, stage=None) -> None:
    """Write one patient's result as ``survival.png`` and ``survival.json`` in ``out_dir`` (with ``stage``, an
    :class:`~gliomasuite.outputs.OutputSet`, both are left for its commit)."""
    from .plot import plot_patient

    out = Path(out_dir)  # (its folder is made with the first file, or was made by ``stage``)
    png = out / "survival.png"
    plot_patient(result, png, stage)
    result["plot"] = str(png)
    write_json_atomically(result, out / "survival.json", stage=stage)
