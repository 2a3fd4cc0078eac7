"""RANO 2.0 response (Wen et al., J Clin Oncol 2023) from tumour measurements, in numbers and words.

Pure functions, no I/O: the caller measures (``diameters`` for bidimensional products, ``lesions`` for
volumes and new lesions) and this module applies the criteria, so the rules can be read and tested on
their own. Decreases are read against the baseline (response), increases against the nadir, the
smallest value so far (progression), as RANO prescribes: a tumour that shrank and regrew can progress
while still smaller than at baseline.

Imaging only: RANO 2.0 also asks that CR and PR persist on a scan at least 4 weeks later with stable or
reduced corticosteroids and stable or improved clinical status, and counts clinical decline as
progression; those are the reader's to add, and the notes say so.
"""

import datetime
import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..errors import GliomaSuiteError

#: Sum of products of perpendicular diameters (mm²): PR at or below -50 % from baseline, PD at or above
#: +25 % from the nadir.
BIDIMENSIONAL_PR_PERCENT = -50.0
BIDIMENSIONAL_PD_PERCENT = 25.0
#: Volume (cm³): RANO 2.0's volumetric equivalents of the 2D thresholds for a sphere,
#: 0.5 ** 1.5 = 0.35 (-65 %) and 1.25 ** 1.5 = 1.40 (+40 %).
VOLUMETRIC_PR_PERCENT = -65.0
VOLUMETRIC_PD_PERCENT = 40.0
#: A lesion is measurable when both perpendicular diameters are at least this long.
MEASURABLE_DIAMETER_MM = 10.0
#: Progression up to 12 weeks after the end of radiotherapy may be pseudoprogression: RANO 2.0 calls it
#: preliminary and asks for a confirmation scan 4 to 8 weeks later.
PRELIMINARY_WINDOW_DAYS = 84
CONFIRMATION_DAYS = (28, 56)

BIDIMENSIONAL, VOLUMETRIC = "bidimensional", "volumetric"
CATEGORY_NAMES = {"CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                  "PD": "Progressive disease"}
IDH_VALUES = ("mutant", "wildtype")

# Per method: thresholds, unit, and for each component the Scan field and its words. RANO 2.0 reads the
# non-enhancing (T2/FLAIR) tumour of IDH-mutant gliomas with the 2D thresholds (+25 % / -50 % of the sum
# of products). For volumes we apply to it the volumetric equivalents RANO 2.0 gives for enhancing tumour
# (+40 % / -65 %): our choice, as 2D thresholds applied to a volume would call progression too early.
# RANO 2.0's minor response (T2/FLAIR down 25-50 %) is not a category here; it reads as SD.
_METHODS = {
    BIDIMENSIONAL: {"pr": BIDIMENSIONAL_PR_PERCENT, "pd": BIDIMENSIONAL_PD_PERCENT, "unit": "mm²",
                    "enhancing": ("sum_of_products_mm2", "the sum of bidimensional products of enhancing lesions"),
                    "non-enhancing": ("non_enhancing_sum_of_products_mm2",
                                      "the sum of bidimensional products of non-enhancing (T2/FLAIR) lesions")},
    VOLUMETRIC: {"pr": VOLUMETRIC_PR_PERCENT, "pd": VOLUMETRIC_PD_PERCENT, "unit": "cm³",
                 "enhancing": ("enhancing_volume_cm3", "the enhancing tumour volume"),
                 "non-enhancing": ("non_enhancing_volume_cm3", "the non-enhancing (T2/FLAIR) tumour volume")},
}


@dataclass
class Scan:
    """What one scan measured. ``sum_of_products_mm2`` sums measurable enhancing lesions only;
    ``non_measurable_enhancing`` says enhancing disease too small to measure remains (it forbids CR);
    ``new_lesions`` holds where each new measurable lesion is (e.g. "left hemisphere", or "")."""

    sum_of_products_mm2: Optional[float] = None
    enhancing_volume_cm3: Optional[float] = None
    non_enhancing_sum_of_products_mm2: Optional[float] = None
    non_enhancing_volume_cm3: Optional[float] = None
    non_measurable_enhancing: bool = False
    new_lesions: List[str] = field(default_factory=list)
    date: Optional[datetime.date] = None


@dataclass
class ComponentChange:
    """One component's category and its change; a percent is None where its reference is zero."""

    component: str  # "enhancing" or "non-enhancing"
    quantity: str
    unit: str
    category: str
    current: float
    baseline: float
    nadir: float
    percent_from_baseline: Optional[float]
    percent_from_nadir: Optional[float]


@dataclass
class RanoResult:
    """The overall RANO 2.0 category and why; ``driver`` names what decided it."""

    category: str
    preliminary: bool
    method: str
    driver: str
    percent_from_baseline: Optional[float]
    percent_from_nadir: Optional[float]
    enhancing: ComponentChange
    non_enhancing: Optional[ComponentChange] = None
    new_lesions: List[str] = field(default_factory=list)
    days_after_radiotherapy: Optional[int] = None
    confirm_between: Optional[Tuple[datetime.date, datetime.date]] = None
    notes: List[str] = field(default_factory=list)

    def sentence(self) -> str:
        return describe(self)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.confirm_between:
            out["confirm_between"] = [day.isoformat() for day in self.confirm_between]
        out["sentence"] = self.sentence()
        return out


def is_measurable(long_mm: float, short_mm: float) -> bool:
    """RANO: both perpendicular diameters at least 10 mm."""
    return long_mm >= MEASURABLE_DIAMETER_MM and short_mm >= MEASURABLE_DIAMETER_MM


def percent_change(value: float, reference: float) -> Optional[float]:
    """Change from ``reference`` in percent; None when the reference is zero (undefined)."""
    if reference == 0:
        return None
    # Rounded so that values exactly at a threshold (e.g. 14 vs 10 cm³) are not lost to float error.
    return round(100.0 * (value - reference) / reference, 9)


def classify_change(current: float, baseline: float, nadir: float, pr_percent: float, pd_percent: float,
                    disease_remaining: bool = False) -> str:
    """CR, PR, SD or PD of one component from its current, baseline and nadir values.

    Growth from a zero nadir is PD (disease appeared where there was none). CR needs disease at
    baseline and none now (``disease_remaining`` marks non-measurable disease left).
    """
    from_nadir = percent_change(current, nadir)
    if (nadir == 0 and current > 0) or (from_nadir is not None and from_nadir >= pd_percent):
        return "PD"
    if baseline > 0 and current == 0 and not disease_remaining:
        return "CR"
    from_baseline = percent_change(current, baseline)
    if from_baseline is not None and from_baseline <= pr_percent:
        return "PR"
    return "SD"


def combine_components(enhancing: Optional[str], non_enhancing: Optional[str]) -> str:
    """Overall category from the enhancing and non-enhancing ones (RANO 2.0, IDH-mutant gliomas).

    PD in either is PD; CR needs enhancing CR and PR enhancing PR, the non-enhancing tumour not
    progressing; anything else is SD. A component that is None (not assessed, or no enhancing tumour
    at baseline nor now) leaves the other to decide alone.
    """
    if enhancing is None or non_enhancing is None:
        return enhancing or non_enhancing
    if "PD" in (enhancing, non_enhancing):
        return "PD"
    return enhancing if enhancing in ("CR", "PR") else "SD"


def assess(current: Scan, baseline: Scan, previous: Sequence[Scan] = (), method: str = BIDIMENSIONAL,
           idh: Optional[str] = None, rt_end: Optional[datetime.date] = None) -> RanoResult:
    """RANO 2.0 category of ``current`` against ``baseline`` and the scans in between (``previous``).

    The nadir is the smallest value of the baseline and ``previous``. ``idh`` ("mutant", "wildtype" or
    None) decides whether the non-enhancing tumour counts: RANO 2.0 assesses it only in IDH-mutant
    gliomas. With ``rt_end`` (the last day of radiotherapy) a PD within 12 weeks of it is preliminary.
    """
    if method not in _METHODS:
        raise GliomaSuiteError(f"Unknown RANO method {method!r}: use {BIDIMENSIONAL!r} or {VOLUMETRIC!r}.")
    if idh is not None and idh not in IDH_VALUES:
        raise GliomaSuiteError(f"IDH status {idh!r} is not understood: give 'mutant', 'wildtype' or None (unknown).")
    if rt_end is not None and current.date is None:
        raise GliomaSuiteError("The end of radiotherapy is given but the current scan has no date: give the scan's "
                               "date so a progression within 12 weeks of radiotherapy can be recognised.")
    notes: List[str] = []
    enhancing = _component("enhancing", method, current, baseline, previous, notes, required=True)
    non_enhancing = None
    if idh == "mutant":
        non_enhancing = _component("non-enhancing", method, current, baseline, previous, notes, required=False)
    else:
        notes.append("The non-enhancing (T2/FLAIR) tumour was not assessed: RANO 2.0 assesses it only in "
                     f"IDH-mutant gliomas, and the IDH status is {idh or 'unknown'}.")
    enhancing_absent = (enhancing.baseline == 0 and enhancing.current == 0 and not current.non_measurable_enhancing)
    if enhancing.baseline == 0 and enhancing.category == "SD" and not (enhancing_absent and non_enhancing):
        notes.append("There was no measurable enhancing tumour at baseline, so the enhancing tumour can only be "
                     "stable or progress.")
    category = combine_components(None if enhancing_absent and non_enhancing else enhancing.category,
                                  non_enhancing.category if non_enhancing else None)
    if current.new_lesions:
        category = "PD"
    driver = _driver(category, enhancing, non_enhancing, enhancing_absent, bool(current.new_lesions))
    decisive = non_enhancing if driver == "non-enhancing" else enhancing
    result = RanoResult(category, False, method, driver, decisive.percent_from_baseline, decisive.percent_from_nadir,
                        enhancing, non_enhancing, list(current.new_lesions), notes=notes)
    if rt_end is not None:
        result.days_after_radiotherapy = (current.date - rt_end).days
        # Scans during radiotherapy (negative days) carry the same risk of pseudoprogression.
        if category == "PD" and result.days_after_radiotherapy <= PRELIMINARY_WINDOW_DAYS:
            result.preliminary = True
            result.confirm_between = tuple(current.date + datetime.timedelta(days=d) for d in CONFIRMATION_DAYS)
    if category in ("CR", "PR"):
        notes.append("RANO 2.0 requires CR and PR to persist on a scan at least 4 weeks later, with stable or "
                     "reduced corticosteroids and stable or improved clinical status; this reading uses imaging only.")
    return result


def _component(name: str, method: str, current: Scan, baseline: Scan, previous: Sequence[Scan], notes: List[str],
               required: bool) -> Optional[ComponentChange]:
    spec = _METHODS[method]
    attribute, quantity = spec[name]
    now, base = _measured(current, attribute), _measured(baseline, attribute)
    for label, value in (("current", now), ("baseline", base)):
        if value is None and required:
            raise GliomaSuiteError(f"The {label} scan lacks {quantity} ({attribute}): measure it, or choose the "
                                   "other RANO method if that is what was measured.")
        if value is not None and value < 0:
            raise GliomaSuiteError(f"The {label} scan has a negative {attribute} ({value}): a size cannot be "
                                   "negative, so correct the measurement.")
    if now is None or base is None:
        notes.append(f"IDH-mutant glioma, but {quantity} is missing at the "
                     f"{'current scan' if now is None else 'baseline'}, so the category rests on the enhancing "
                     "tumour alone.")
        return None
    earlier = [_measured(scan, attribute) for scan in previous]
    known = [float(value) for value in earlier if value is not None]
    if len(known) < len(earlier):
        notes.append(f"{len(earlier) - len(known)} earlier scan(s) lack {quantity} and were left out of the nadir.")
    nadir = min([float(base)] + known)
    remaining = name == "enhancing" and current.non_measurable_enhancing
    category = classify_change(float(now), float(base), nadir, spec["pr"], spec["pd"], remaining)
    return ComponentChange(name, quantity, spec["unit"], category, float(now), float(base), nadir,
                           percent_change(float(now), float(base)), percent_change(float(now), nadir))


def _measured(scan: Scan, attribute: str) -> Optional[float]:
    value = getattr(scan, attribute)
    return None if value is None or math.isnan(value) else float(value)  # NaN: not measured


def _driver(category: str, enhancing: ComponentChange, non_enhancing: Optional[ComponentChange],
            enhancing_absent: bool, new_lesion: bool) -> str:
    if category == "PD":
        grown = [c.component for c in (enhancing, non_enhancing) if c is not None and c.category == "PD"]
        if new_lesion and not grown:
            return "new lesion"
        return " and ".join(grown + (["new lesion"] if new_lesion else []))
    return "non-enhancing" if enhancing_absent and non_enhancing else "enhancing"


def _amount(value: float, unit: str) -> str:
    if unit == "mm²":
        return f"{value:.0f} mm²"
    return f"{value:.1f} cm³" if value >= 1 or value == 0 else f"{value:.2f} cm³"


def _percent(value: float) -> str:
    # Whole percent, unless rounding would show a threshold that the value did not reach.
    thresholds = (BIDIMENSIONAL_PR_PERCENT, BIDIMENSIONAL_PD_PERCENT, VOLUMETRIC_PR_PERCENT, VOLUMETRIC_PD_PERCENT)
    shown = round(abs(value))
    if any(shown == abs(t) and abs(value) != abs(t) for t in thresholds):
        return f"{abs(value):.1f}%"
    return f"{shown}%"


def _clause(change: ComponentChange) -> str:
    def amount(value: float) -> str:
        return _amount(value, change.unit)

    if change.category == "PD" and change.percent_from_nadir is None:
        nothing = "no measurable lesion" if change.unit == "mm²" else "none"
        return (f"{change.quantity} went from {nothing} at the nadir to {amount(change.current)}, so its percent "
                "change from the nadir is undefined")
    if change.category == "PD":
        return (f"{change.quantity} rose {_percent(change.percent_from_nadir)} from the nadir "
                f"({amount(change.nadir)} → {amount(change.current)})")
    if change.category == "CR":
        return f"no {change.component} tumour remains ({amount(change.baseline)} at baseline)"
    if change.category == "PR":
        return (f"{change.quantity} fell {_percent(change.percent_from_baseline)} from baseline "
                f"({amount(change.baseline)} → {amount(change.current)})")
    if change.baseline == 0 and change.current == 0:
        measurable = "measurable " if change.unit == "mm²" else ""
        return f"there is no {measurable}{change.component} tumour now or at baseline"
    values = f"baseline {amount(change.baseline)}, nadir {amount(change.nadir)}, now {amount(change.current)}"
    parts = []
    for percent, reference in ((change.percent_from_baseline, "baseline"), (change.percent_from_nadir, "the nadir")):
        if percent is not None and (reference == "baseline" or change.nadir != change.baseline):
            parts.append(f"{_percent(percent)} {'above' if percent > 0 else 'below'} {reference}"
                         if percent else f"unchanged from {reference}")
    return f"{change.quantity} is {' and '.join(parts)} ({values})"


def describe(result: RanoResult) -> str:
    """The result as a radiologist would write it, e.g. "Progressive disease (RANO 2.0): ..."."""
    heading = CATEGORY_NAMES[result.category]
    if result.preliminary:
        heading = "Preliminary progressive disease"
    clauses = [_clause(change) for change in (result.enhancing, result.non_enhancing) if change is not None]
    if result.new_lesions:
        places = [place for place in result.new_lesions if place]
        count = len(result.new_lesions)
        text = "new measurable enhancing lesion" if count == 1 else f"{count} new measurable enhancing lesions"
        if places:
            text += (f" in the {places[0]}" if count == 1 else f" ({', '.join(places)})")
        clauses.append(text)
    sentence = f"{heading} (RANO 2.0): {'; '.join(clauses)}."
    if result.preliminary:
        start, end = (day.isoformat() for day in result.confirm_between)
        days = result.days_after_radiotherapy
        when = (f"{days} days after the end of radiotherapy, within the 12 weeks" if days >= 0
                else f"{-days} days before the end of radiotherapy, a time")
        sentence += (f" The scan is {when} when treatment-related change (pseudoprogression) can mimic "
                     "progression: confirm with a scan 4–8 "
                     f"weeks later ({start} to {end}) unless the new enhancement lies outside the radiation field "
                     "or progression is proven histologically.")
    return sentence
