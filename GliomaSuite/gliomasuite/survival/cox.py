"""Cox proportional-hazards model: fitting with lifelines, prediction from plain JSON.

Fitting uses lifelines' ``CoxPHFitter`` (Breslow baseline, ridge penalty chosen by cross-validated
C-index). Prediction never needs lifelines: a fitted model is written as plain, versioned JSON —
feature definitions, standardisation means and SDs, coefficients and their covariance, the
baseline cumulative hazard on lifelines' own time grid — and :class:`CoxModel` reproduces lifelines'
``predict_partial_hazard``, ``predict_survival_function`` and ``predict_median`` from it to
floating-point precision (tested). Loading never executes code from the file: feature transforms
are names looked up in :data:`TRANSFORMS`.

Model, with x the raw features after their transforms:

    z = (x - means) / sds                     standardised as in the training cohort
    lp = (z - lifelines_centre) . beta        lifelines centres on the training mean of z (~0)
    H(t | x) = H0(t) exp(lp),  S(t | x) = exp(-H(t | x))

H0 is interpolated linearly between the grid times as lifelines does (``np.interp``; constant
beyond the last follow-up time, so the curve is not extrapolated past the cohort).

The 95% band of a patient's curve is approximate (stated in every output that shows it): on the
log cumulative-hazard scale, var(log H(t|x)) = var(log H0(t)) + x'V x, with V the coefficients'
covariance and var(H0(t)) the Breslow-Aalen sum of d_k / (sum over the risk set of exp(lp))^2; the
covariance between the two terms is ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from ..errors import GliomaSuiteError

FORMAT = "gliomasuite-survival-model"
FORMAT_VERSION = 1
Z95 = 1.959963984540054


def _log1p_cm3(values):
    return np.log1p(np.asarray(values, dtype=np.float64) / 1000.0)


def _identity(values):
    return np.asarray(values, dtype=np.float64)


#: Feature transforms a model file may name (nothing else is ever evaluated).
TRANSFORMS = {"identity": _identity, "log1p_cm3": _log1p_cm3}

#: Valid range of raw input columns (inclusive); values outside are refused, not clipped.
VALID_RANGES = {"age": (18.0, 100.0), "vol_mm3": (0.0, 2.0e6), "sphericity": (0.0, 1.2),
                "compactness": (0.0, 1.8), "elongation": (0.0, 1.0), "flatness": (0.0, 1.0)}


def valid_range(column: str):
    if column in VALID_RANGES:
        return VALID_RANGES[column]
    for suffix, limits in VALID_RANGES.items():
        if column.endswith("_" + suffix):
            return limits
    return None


def feature(name: str, column: str, transform: str = "identity", label: Optional[str] = None) -> dict:
    """A model feature: ``transform`` applied to the input ``column``."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}")
    return {"name": name, "column": column, "transform": transform, "label": label or name}


def required_columns(features: Sequence[Mapping]) -> List[str]:
    out = []
    for f in features:
        if f["column"] not in out:
            out.append(f["column"])
    return out


def check_value(column: str, value, where: str = "") -> float:
    """One raw input value as float, or a :class:`GliomaSuiteError` naming what is wrong with it."""
    where = f" {where}" if where else ""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise GliomaSuiteError(f"{column} is missing{where}; give a value (a missing feature is never filled in).")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GliomaSuiteError(f"{column}{where} is {value!r}, not a number; give a number.") from None
    if not math.isfinite(number):
        raise GliomaSuiteError(
            f"{column} is missing (NaN){where}; give a value (a missing feature is never filled in; an empty "
            "region has no shape, so a model that needs it cannot score this patient).")
    limits = valid_range(column)
    if limits and not (limits[0] <= number <= limits[1]):
        unit = " years" if column == "age" else ""
        raise GliomaSuiteError(f"{column}{where} is {number:g}{unit}, outside the valid range "
                               f"{limits[0]:g} to {limits[1]:g}{unit}; check the value.")
    return number


def design_matrix(rows: Sequence[Mapping], features: Sequence[Mapping]) -> np.ndarray:
    """Raw rows (dicts of column -> value) to the model's transformed feature matrix (n, p)."""
    raw = {}
    for column in required_columns(features):
        raw[column] = np.array([check_value(column, row.get(column), f"in row {i + 1}" if len(rows) > 1 else "")
                                for i, row in enumerate(rows)], dtype=np.float64)
    return np.column_stack([TRANSFORMS[f["transform"]](raw[f["column"]]) for f in features]) \
        if features else np.zeros((len(rows), 0))


class CoxModel:
    """A fitted Cox model that predicts from its JSON form alone (numpy only)."""

    def __init__(self, data: Mapping):
        if data.get("format") != FORMAT or data.get("kind") != "cox":
            raise GliomaSuiteError("This file is not a GliomaSuite Cox survival model.")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise GliomaSuiteError(f"This survival model was written by a newer GliomaSuite (format version "
                                   f"{data['format_version']}); update GliomaSuite to use it.")
        self.data = dict(data)
        self.features = list(data["features"])
        for f in self.features:
            if f["transform"] not in TRANSFORMS:
                raise GliomaSuiteError(f"The survival model uses an unknown feature transform {f['transform']!r}.")
        self.means = np.asarray(data["standardise"]["means"], dtype=np.float64)
        self.sds = np.asarray(data["standardise"]["sds"], dtype=np.float64)
        self.centre = np.asarray(data["lifelines_centre"], dtype=np.float64)
        self.beta = np.asarray(data["coefficients"], dtype=np.float64)
        self.covariance = np.asarray(data["covariance"], dtype=np.float64)
        base = data["baseline"]
        self.times = np.asarray(base["times"], dtype=np.float64)
        self.cumhaz = np.asarray(base["cumulative_hazard"], dtype=np.float64)
        self.cumhaz_var = np.asarray(base["cumulative_hazard_variance"], dtype=np.float64)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "CoxModel":
        return cls(json.loads(Path(path).read_text()))

    def to_json(self) -> dict:
        return dict(self.data)

    @property
    def columns(self) -> List[str]:
        return required_columns(self.features)

    # -- prediction --------------------------------------------------------------------------------
    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(x) - self.means) / self.sds

    def linear_predictor(self, x: np.ndarray) -> np.ndarray:
        """lp = (z - centre) . beta for transformed features ``x`` (n, p); lifelines' log partial hazard."""
        return (self.standardise(x) - self.centre) @ self.beta

    def partial_hazard(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.linear_predictor(x))

    def baseline_at(self, times) -> np.ndarray:
        return np.interp(np.asarray(times, dtype=np.float64), self.times, self.cumhaz)

    def survival(self, x: np.ndarray, times=None) -> np.ndarray:
        """S(t | x) with shape (len(times), n), as lifelines' ``predict_survival_function``."""
        times = self.times if times is None else np.atleast_1d(np.asarray(times, dtype=np.float64))
        return np.exp(-np.outer(self.baseline_at(times), self.partial_hazard(x)))

    def survival_band(self, x: np.ndarray, times=None):
        """(S, lower, upper), each (len(times), n): the approximate 95% band (module docstring)."""
        times = self.times if times is None else np.atleast_1d(np.asarray(times, dtype=np.float64))
        z = self.standardise(x) - self.centre
        var_lp = np.einsum("ij,jk,ik->i", z, self.covariance, z)
        h0 = self.baseline_at(times)
        var_h0 = np.interp(times, self.times, self.cumhaz_var)
        with np.errstate(divide="ignore", invalid="ignore"):
            var_log_h0 = np.where(h0 > 0, var_h0 / h0 ** 2, 0.0)
        se = np.sqrt(var_log_h0[:, None] + var_lp[None, :])
        h = np.outer(h0, self.partial_hazard(x))
        s = np.exp(-h)
        lower = np.exp(-h * np.exp(Z95 * se))
        upper = np.exp(-h * np.exp(-Z95 * se))
        return s, lower, upper

    def median(self, x: np.ndarray) -> np.ndarray:
        """Median survival per row (days): the first grid time with S <= 0.5 (lifelines' convention);
        ``inf`` when the curve stays above 0.5 through the cohort's follow-up."""
        return first_time_below(self.times, self.survival(x), 0.5)


def first_time_below(times: np.ndarray, curves: np.ndarray, level: float) -> np.ndarray:
    """First time each column of ``curves`` (len(times), n) is <= level; inf if never."""
    curves = np.asarray(curves)
    if curves.ndim == 1:
        curves = curves[:, None]
    below = curves <= level
    hit = below.any(axis=0)
    index = np.argmax(below, axis=0)
    return np.where(hit, np.asarray(times)[index], np.inf)


# ----------------------------------------------------------------------------------------------
# fitting (lifelines)


def _frame(x: np.ndarray, names: Sequence[str], durations=None, events=None):
    import pandas as pd

    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=list(names))
    if durations is not None:
        frame["T"] = np.asarray(durations, dtype=np.float64)
        frame["E"] = np.asarray(events, dtype=np.int64)
    return frame


def _lifelines_fit(z: np.ndarray, names, durations, events, penalizer: float):
    from lifelines import CoxPHFitter

    cph = CoxPHFitter(penalizer=penalizer, l1_ratio=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph.fit(_frame(z, names, durations, events), duration_col="T", event_col="E")
    return cph


def standardisation(x: np.ndarray):
    means = x.mean(axis=0)
    sds = x.std(axis=0, ddof=1)
    sds = np.where(sds > 0, sds, 1.0)
    return means, sds


def fit_cox(x: np.ndarray, durations, events, features: Sequence[Mapping], penalizer: float,
            return_lifelines: bool = False):
    """Fit on transformed features ``x`` (n, p); returns a :class:`CoxModel` (and the lifelines fitter)."""
    x = np.asarray(x, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    events = np.asarray(events, dtype=np.int64)
    names = [f["name"] for f in features]
    means, sds = standardisation(x)
    z = (x - means) / sds
    cph = _lifelines_fit(z, names, durations, events, penalizer)
    beta = cph.params_[names].to_numpy(dtype=np.float64)
    centre = np.asarray(cph._norm_mean[names], dtype=np.float64)
    base = cph.baseline_cumulative_hazard_
    times = base.index.to_numpy(dtype=np.float64)
    cumhaz = base.iloc[:, 0].to_numpy(dtype=np.float64)
    # Breslow-Aalen variance of H0 at the grid times (risk sets with the centred linear predictor).
    risk = np.exp((z - centre) @ beta)
    increments = np.zeros(len(times))
    for k, t in enumerate(times):
        d = events[durations == t].sum()
        if d:
            increments[k] = d / risk[durations >= t].sum() ** 2
    cumhaz_var = np.cumsum(increments)
    summary = cph.summary
    coefficients = []
    for i, f in enumerate(features):
        row = summary.loc[f["name"]]
        coefficients.append({
            "name": f["name"], "label": f["label"], "coef_per_sd": float(beta[i]),
            "hazard_ratio_per_sd": float(np.exp(beta[i])),
            "hr_95ci": [float(row["exp(coef) lower 95%"]), float(row["exp(coef) upper 95%"])],
            "p": float(row["p"]), "sd": float(sds[i]), "mean": float(means[i])})
    data = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "cox",
        "fitted_with": "lifelines.CoxPHFitter (Breslow baseline, ridge penalty)",
        "lifelines_version": _lifelines_version(),
        "penalizer": float(penalizer), "l1_ratio": 0.0,
        "features": [dict(f) for f in features],
        "standardise": {"means": means.tolist(), "sds": sds.tolist()},
        "lifelines_centre": centre.tolist(),
        "coefficients": beta.tolist(),
        "covariance": cph.variance_matrix_.loc[names, names].to_numpy(dtype=np.float64).tolist(),
        "baseline": {"times": times.tolist(), "cumulative_hazard": cumhaz.tolist(),
                     "cumulative_hazard_variance": cumhaz_var.tolist(),
                     "time_unit": "days"},
        "summary": coefficients,
        "n": int(len(durations)), "events": int(events.sum()),
        "training_concordance": float(cph.concordance_index_),
        "log_likelihood": float(cph.log_likelihood_),
    }
    model = CoxModel(data)
    return (model, cph) if return_lifelines else model


def _lifelines_version() -> str:
    try:
        import lifelines

        return lifelines.__version__
    except Exception:  # pragma: no cover - lifelines is needed to fit at all
        return "unknown"


def concordance(durations, risk, events) -> float:
    """Harrell's C-index of a risk score (higher risk = shorter survival)."""
    from lifelines.utils import concordance_index

    return float(concordance_index(np.asarray(durations), -np.asarray(risk), np.asarray(events)))


def fold_indices(n: int, folds: int, seed: int) -> List[np.ndarray]:
    order = np.random.RandomState(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def cv_cindex_fixed(x, durations, events, features, penalizer: float, folds: int = 5, seed: int = 0) -> float:
    """Mean held-out C-index over ``folds`` folds for one penalizer (used to choose it)."""
    x, durations, events = np.asarray(x, float), np.asarray(durations, float), np.asarray(events, int)
    scores = []
    for test in fold_indices(len(durations), folds, seed):
        train = np.setdiff1d(np.arange(len(durations)), test)
        model = fit_cox(x[train], durations[train], events[train], features, penalizer)
        scores.append(concordance(durations[test], model.linear_predictor(x[test]), events[test]))
    return float(np.mean(scores))


def choose_penalizer(x, durations, events, features, grid: Sequence[float], folds: int = 5,
                     seeds: Sequence[int] = (0,)) -> dict:
    """The penalizer with the best mean cross-validated C-index (ties: the larger penalty)."""
    table = []
    for penalizer in grid:
        score = float(np.mean([cv_cindex_fixed(x, durations, events, features, penalizer, folds, s) for s in seeds]))
        table.append({"penalizer": float(penalizer), "cv_cindex": score})
    best = max(table, key=lambda row: (round(row["cv_cindex"], 4), row["penalizer"]))
    return {"penalizer": best["penalizer"], "grid": table}


def nested_cv(x, durations, events, features, grid: Sequence[float], folds: int = 5,
              repeats: int = 1, seed: int = 0, times_of_interest: Sequence[float] = ()) -> dict:
    """Honest cross-validated performance: the penalizer is chosen inside each training fold.

    Returns the mean and SD of the held-out C-index over ``folds`` x ``repeats`` folds, and the
    out-of-fold linear predictor, median and S(t) at ``times_of_interest`` from the first repeat
    (for calibration and the BraTS 3-class accuracy). ``inner_cindex`` is, per fold, the best inner
    cross-validated C-index over the grid (NaN with a one-value grid): what choosing among feature
    sets inside the CV needs, without fitting again.
    """
    x, durations, events = np.asarray(x, float), np.asarray(durations, float), np.asarray(events, int)
    n = len(durations)
    scores, chosen, inner = [], [], []
    oof_lp = np.full(n, np.nan)
    oof_median = np.full(n, np.nan)
    oof_surv = np.full((len(times_of_interest), n), np.nan)
    for r in range(repeats):
        for test in fold_indices(n, folds, seed + 1000 * r):
            train = np.setdiff1d(np.arange(n), test)
            if len(grid) > 1:
                choice = choose_penalizer(x[train], durations[train], events[train], features, grid, folds,
                                          seeds=(seed + 1000 * r + 1,))
                pick = choice["penalizer"]
                inner.append(max(g["cv_cindex"] for g in choice["grid"]))
            else:
                pick = float(grid[0])
                inner.append(float("nan"))
            chosen.append(pick)
            model = fit_cox(x[train], durations[train], events[train], features, pick)
            lp = model.linear_predictor(x[test])
            scores.append(concordance(durations[test], lp, events[test]))
            if r == 0:
                oof_lp[test] = lp
                oof_median[test] = model.median(x[test])
                if len(times_of_interest):
                    oof_surv[:, test] = model.survival(x[test], times_of_interest)
    return {"cindex_mean": float(np.mean(scores)), "cindex_sd": float(np.std(scores, ddof=1)),
            "folds": folds, "repeats": repeats, "fold_cindex": [float(s) for s in scores],
            "penalizers_chosen": chosen, "inner_cindex": inner, "oof_linear_predictor": oof_lp, "oof_median": oof_median,
            "oof_survival": oof_surv}


def proportional_hazards_check(x, durations, events, features, penalizer: float,
                               p_threshold: float = 0.05) -> dict:
    """Schoenfeld-residual test of proportional hazards per feature (lifelines, rank time transform),
    plus lifelines' ``check_assumptions`` advice captured as text."""
    from lifelines.statistics import proportional_hazard_test

    x = np.asarray(x, float)
    names = [f["name"] for f in features]
    means, sds = standardisation(x)
    z = (x - means) / sds
    cph = _lifelines_fit(z, names, durations, events, penalizer)
    frame = _frame(z, names, durations, events)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = proportional_hazard_test(cph, frame, time_transform="rank")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            cph.check_assumptions(frame, p_value_threshold=p_threshold, show_plots=False)
    summary = result.summary
    tests = []
    for name in names:
        row = summary.loc[name]
        tests.append({"feature": name, "test_statistic": float(row["test_statistic"]), "p": float(row["p"]),
                      "violated": bool(row["p"] < p_threshold)})
    violated = [t["feature"] for t in tests if t["violated"]]
    text = buffer.getvalue().strip()
    verdict = ("The proportional hazards assumption holds for every feature (Schoenfeld test, rank time, "
               f"p >= {p_threshold})." if not violated else
               f"Possible violation of proportional hazards (p < {p_threshold}) for: {', '.join(violated)}; "
               "their hazard ratios are averages over follow-up.")
    return {"method": "Schoenfeld residuals, rank time transform (lifelines proportional_hazard_test)",
            "p_threshold": p_threshold, "tests": tests, "violated": violated, "verdict": verdict,
            "lifelines_advice": text}
