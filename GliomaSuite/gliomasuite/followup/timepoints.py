"""The time points of one patient's follow-up: their order, the baseline, and the nadir.

Response in RANO 2.0 is read against two references: the baseline (by default the first scan, but the
post-radiotherapy scan when the first one predates treatment) for response, and the nadir (the
smallest tumour since baseline) for progression. Both depend on the scans being in date order and of
one patient, so this module refuses what would make them ambiguous (two scans on one date, some dated
and some not, different patient IDs) with a sentence saying what to fix.
"""

import datetime
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import SimpleITK as sitk

from ..errors import GliomaSuiteError

STUDY_DATE_TAG = "0008|0020"
PATIENT_ID_TAG = "0010|0020"
PATIENT_NAME_TAG = "0010|0010"
#: How response is measured, for the note on scans before the chosen baseline.
PRE_BASELINE_REASON = "response is measured from the baseline (RANO 2.0: the post-radiotherapy scan)"


@dataclass
class TimePoint:
    """One scan date of the patient: ``label`` (e.g. "TP1" or the folder name) names it to the user,
    ``source`` is where its images are, ``seg`` its label map if the reader has one. ``days_from_baseline``
    (negative before it), ``is_baseline`` and ``is_pre_baseline`` are set by :func:`order_timepoints`."""

    label: str
    source: Union[str, Path]
    date: Optional[datetime.date] = None
    days_from_baseline: Optional[int] = None
    is_baseline: bool = False
    is_pre_baseline: bool = False
    seg: Optional[Union[str, Path]] = None


class OrderedTimePoints(NamedTuple):
    """The time points in date order, which of them is the baseline, and notes for the user."""

    timepoints: List[TimePoint]
    baseline_index: int
    notes: List[str]


def parse_date(text: str) -> datetime.date:
    """A date written ``YYYY-MM-DD`` or as DICOM writes it, ``YYYYMMDD``."""
    cleaned = str(text).strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.datetime.strptime(cleaned, pattern).date()
        except ValueError:
            continue
    raise GliomaSuiteError(f"{text!r} is not a date: write it as YYYY-MM-DD (for example 2021-03-04) or "
                           "YYYYMMDD as in DICOM.")


def order_timepoints(timepoints: Sequence[TimePoint],
                     baseline: Union[str, int, datetime.date, None] = None) -> OrderedTimePoints:
    """Sort by date and mark the baseline; copies, the inputs are not changed.

    ``baseline`` names the baseline by label, by date, or by position in date order (0 = the first
    scan); by default the first scan is. Scans before it are kept, marked ``is_pre_baseline``: they
    do not count for response. Without any dates the given order is kept (and a note says so).
    """
    if len(timepoints) < 2:
        raise GliomaSuiteError(f"A follow-up needs at least two time points; {len(timepoints)} given: add the "
                               "baseline and at least one later scan.")
    labels = [tp.label for tp in timepoints]
    for label in labels:
        if labels.count(label) > 1:
            raise GliomaSuiteError(f"Two time points are both called {label!r}: give each time point its own label.")
    dated = [tp for tp in timepoints if tp.date is not None]
    notes = []
    if dated and len(dated) < len(timepoints):
        undated = ", ".join(tp.label for tp in timepoints if tp.date is None)
        raise GliomaSuiteError(f"Some time points have a date and {undated} have none: give every time point its "
                               "date, or none of them (then they are taken in the order given).")
    if dated:
        ordered = sorted(timepoints, key=lambda tp: tp.date)
        for earlier, later in zip(ordered, ordered[1:]):
            if earlier.date == later.date:
                raise GliomaSuiteError(f"{earlier.label} and {later.label} have the same date {earlier.date}: keep one "
                                       "time point per scan date, or correct the date of one of them.")
    else:
        ordered = list(timepoints)
        notes.append("No time point has a date, so they are taken in the order given, the first as baseline; "
                     "days from baseline are unknown.")
    chosen = _baseline_index(ordered, baseline)
    result = []
    for index, tp in enumerate(ordered):
        days = (tp.date - ordered[chosen].date).days if dated else None
        result.append(replace(tp, days_from_baseline=days, is_baseline=index == chosen,
                              is_pre_baseline=index < chosen))
    if chosen > 0:
        before = ", ".join(tp.label for tp in ordered[:chosen])
        notes.append(f"{before} {'is' if chosen == 1 else 'are'} before the baseline {ordered[chosen].label}: kept as "
                     f"pre-baseline, not counted for response ({PRE_BASELINE_REASON}).")
    return OrderedTimePoints(result, chosen, notes)


def _baseline_index(ordered: List[TimePoint], baseline: Union[str, int, datetime.date, None]) -> int:
    if baseline is None:
        return 0
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        if not 0 <= baseline < len(ordered):
            raise GliomaSuiteError(f"There is no time point {baseline} to use as baseline: choose 0 to "
                                   f"{len(ordered) - 1} (in date order).")
        return baseline
    if isinstance(baseline, str):
        for index, tp in enumerate(ordered):
            if tp.label == baseline:
                return index
        try:
            baseline = parse_date(baseline)
        except GliomaSuiteError:
            raise GliomaSuiteError(f"No time point is called {baseline!r}: choose the baseline among "
                                   f"{', '.join(tp.label for tp in ordered)}.") from None
    if isinstance(baseline, datetime.date):
        if isinstance(baseline, datetime.datetime):
            baseline = baseline.date()
        if all(tp.date is None for tp in ordered):
            raise GliomaSuiteError(f"The baseline is given as the date {baseline} but no time point has a date: name "
                                   "the baseline by its label instead.")
        for index, tp in enumerate(ordered):
            if tp.date == baseline:
                return index
        raise GliomaSuiteError(f"No time point is dated {baseline}: choose the baseline among "
                               f"{', '.join(f'{tp.label} ({tp.date})' for tp in ordered)}.")
    raise GliomaSuiteError(f"The baseline {baseline!r} is neither a label, a date nor a position: name it by one.")


def nadir_before(values: Sequence[Optional[float]], current_index: int, baseline_index: int) -> Tuple[int, float]:
    """The smallest value from the baseline up to, not including, the current time point: (index, value).

    RANO reads progression against this nadir. Time points without a value (None or NaN) are skipped;
    of equal values the earliest is taken.
    """
    candidates = [(index, float(values[index])) for index in range(baseline_index, min(current_index, len(values)))
                  if values[index] is not None and not math.isnan(values[index])]
    if current_index <= baseline_index or not candidates:
        raise GliomaSuiteError(f"Time point {current_index} has no measured time point from the baseline "
                               f"({baseline_index}) before it to compare with: choose a later time point, or an "
                               "earlier baseline.")
    return min(candidates, key=lambda pair: (pair[1], pair[0]))


def study_date_from_dicom(folder: Union[str, Path]) -> Tuple[Optional[datetime.date], Optional[str]]:
    """StudyDate and patient (PatientID, else PatientName) of the first DICOM file in ``folder``.

    Files are tried in name order, subfolders included; only the header is read. Either is None where
    the file leaves it empty (anonymised data often does).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GliomaSuiteError(f"{folder} is not a folder: choose the folder that holds the DICOM files of the scan.")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:  # not DICOM: try the next file
            continue
        date_text = _tag(reader, STUDY_DATE_TAG)
        try:
            date = parse_date(date_text) if date_text else None
        except GliomaSuiteError:
            raise GliomaSuiteError(f"{path} has the study date {date_text!r}, which is not a date: give the time "
                                   "point's date by hand.") from None
        return date, _tag(reader, PATIENT_ID_TAG) or _tag(reader, PATIENT_NAME_TAG)
    raise GliomaSuiteError(f"No DICOM file was found in {folder}: choose the folder that holds the scan's DICOM files.")


def _tag(reader: sitk.ImageFileReader, tag: str) -> Optional[str]:
    # DICOM pads values with spaces (and NUL for some); an empty value is no value.
    value = reader.GetMetaData(tag).strip(" \0") if reader.HasMetaDataKey(tag) else ""
    return value or None


def check_same_patient(patient_ids: Union[Mapping[str, Optional[str]], Sequence[Optional[str]]]) -> Optional[str]:
    """The one patient ID of all time points (None if none has one); refuses two different IDs.

    ``patient_ids`` maps each time point's label to its ID, or lists the IDs in time point order.
    Empty IDs (anonymised data) are not compared.
    """
    pairs = (list(patient_ids.items()) if isinstance(patient_ids, Mapping)
             else [(f"time point {i + 1}", pid) for i, pid in enumerate(patient_ids)])
    known = [(label, pid.strip()) for label, pid in pairs if pid is not None and pid.strip()]
    for label, pid in known[1:]:
        if pid != known[0][1]:
            raise GliomaSuiteError(f"{known[0][0]} is of patient {known[0][1]!r} but {label} is of patient {pid!r}: "
                                   "a follow-up compares scans of one patient, so choose that patient's scans.")
    return known[0][1] if known else None
