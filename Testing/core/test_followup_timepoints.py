"""Time points of one patient: date order, the baseline, the nadir, dates and patient IDs from DICOM."""

import datetime

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.followup.timepoints import (
    TimePoint, check_same_patient, nadir_before, order_timepoints, parse_date, study_date_from_dicom,
)


def tp(label, date=None):
    return TimePoint(label=label, source=f"/data/{label}", date=parse_date(date) if date else None)


def test_parse_date_reads_iso_and_dicom_forms():
    assert parse_date("2021-03-04") == datetime.date(2021, 3, 4)
    assert parse_date("20210304") == datetime.date(2021, 3, 4)
    assert parse_date(" 20210304 ") == datetime.date(2021, 3, 4)


@pytest.mark.parametrize("text", ["", "04/03/2021", "2021-13-01", "20210230", "yesterday"])
def test_parse_date_refuses_what_is_not_a_date(text):
    with pytest.raises(GliomaSuiteError, match="is not a date: write it as YYYY-MM-DD"):
        parse_date(text)


def test_out_of_order_input_is_sorted_by_date_and_the_first_is_baseline():
    given = [tp("TP3", "2021-09-01"), tp("TP1", "2021-01-10"), tp("TP2", "2021-04-02")]
    ordered, baseline, notes = order_timepoints(given)
    assert [t.label for t in ordered] == ["TP1", "TP2", "TP3"]
    assert baseline == 0 and ordered[0].is_baseline and not any(t.is_baseline for t in ordered[1:])
    assert [t.days_from_baseline for t in ordered] == [0, 82, 234]
    assert not any(t.is_pre_baseline for t in ordered) and notes == []
    assert given[0].days_from_baseline is None  # the inputs are not changed


def test_two_time_points_on_one_date_are_refused_naming_both():
    with pytest.raises(GliomaSuiteError, match="TP1 and TP2 have the same date 2021-01-10"):
        order_timepoints([tp("TP1", "2021-01-10"), tp("TP3", "2021-05-01"), tp("TP2", "2021-01-10")])


def test_some_dated_and_some_not_is_refused():
    with pytest.raises(GliomaSuiteError, match="TP2 have none: give every time point its date"):
        order_timepoints([tp("TP1", "2021-01-10"), tp("TP2")])


def test_without_dates_the_given_order_is_kept_with_a_note():
    ordered, baseline, notes = order_timepoints([tp("scan-b"), tp("scan-a"), tp("scan-c")])
    assert [t.label for t in ordered] == ["scan-b", "scan-a", "scan-c"] and baseline == 0
    assert all(t.days_from_baseline is None for t in ordered)
    assert len(notes) == 1 and "order given" in notes[0]


@pytest.mark.parametrize("given", [[], [TimePoint("TP1", "/data/TP1")]])
def test_fewer_than_two_time_points_are_refused(given):
    with pytest.raises(GliomaSuiteError, match="A follow-up needs at least two time points"):
        order_timepoints(given)


def test_duplicate_labels_are_refused():
    with pytest.raises(GliomaSuiteError, match="both called 'TP1'"):
        order_timepoints([tp("TP1", "2021-01-10"), tp("TP1", "2021-02-10")])


@pytest.mark.parametrize("baseline", ["post-RT", datetime.date(2021, 3, 1), "2021-03-01", 1])
def test_chosen_baseline_marks_earlier_scans_pre_baseline(baseline):
    """RANO 2.0: the post-radiotherapy scan is the baseline; the pre-operative scan before it stays."""
    given = [tp("follow-up", "2021-06-01"), tp("pre-op", "2021-01-05"), tp("post-RT", "2021-03-01")]
    ordered, index, notes = order_timepoints(given, baseline=baseline)
    assert [t.label for t in ordered] == ["pre-op", "post-RT", "follow-up"] and index == 1
    assert [t.is_baseline for t in ordered] == [False, True, False]
    assert [t.is_pre_baseline for t in ordered] == [True, False, False]
    assert [t.days_from_baseline for t in ordered] == [-55, 0, 92]
    assert len(notes) == 1 and "pre-op is before the baseline post-RT" in notes[0]


@pytest.mark.parametrize("baseline, message", [
    ("TP9", "No time point is called 'TP9': choose the baseline among TP1, TP2"),
    (datetime.date(2020, 1, 1), "No time point is dated 2020-01-01"),
    (5, "There is no time point 5"),
])
def test_unknown_baseline_is_refused(baseline, message):
    with pytest.raises(GliomaSuiteError, match=message):
        order_timepoints([tp("TP1", "2021-01-10"), tp("TP2", "2021-02-10")], baseline=baseline)


def test_baseline_by_date_needs_dates():
    with pytest.raises(GliomaSuiteError, match="no time point has a date"):
        order_timepoints([tp("TP1"), tp("TP2")], baseline="2021-01-10")


def test_nadir_is_the_smallest_from_baseline_before_the_current_time_point():
    volumes = [50.0, 30.0, 12.0, 20.0, 8.0, 25.0]
    assert nadir_before(volumes, current_index=4, baseline_index=1) == (2, 12.0)
    assert nadir_before(volumes, current_index=5, baseline_index=1) == (4, 8.0)
    assert nadir_before(volumes, current_index=2, baseline_index=1) == (1, 30.0)  # the baseline itself
    # The pre-baseline 5.0 does not count; a missing measurement is skipped; ties take the earliest.
    assert nadir_before([5.0, 30.0, None, float("nan"), 30.0, 40.0], 5, 1) == (1, 30.0)


def test_nadir_needs_a_time_point_from_baseline_before_the_current_one():
    with pytest.raises(GliomaSuiteError, match="no measured time point from the baseline"):
        nadir_before([10.0, 20.0], current_index=1, baseline_index=1)
    with pytest.raises(GliomaSuiteError, match="no measured time point from the baseline"):
        nadir_before([None, 20.0], current_index=1, baseline_index=0)


def write_dicom_series(folder, study_date, patient_id, patient_name="DOE^JANE"):
    """A tiny 8x8x4 MR series, one file per slice, with the tags a scanner writes."""
    folder.mkdir(parents=True)
    volume = sitk.GetImageFromArray(np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # keep the tags set below instead of generating new ones
    series_uid = "1.2.826.0.1.3680043.2.1125.1.20240131"
    for z in range(volume.GetDepth()):
        slice_ = volume[:, :, z]
        for tag, value in (("0008|0020", study_date), ("0010|0020", patient_id), ("0010|0010", patient_name),
                           ("0008|0060", "MR"), ("0020|000d", series_uid + ".1"), ("0020|000e", series_uid + ".2"),
                           ("0020|0013", str(z + 1)),
                           ("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, z)))))):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def test_study_date_and_patient_are_read_from_dicom(tmp_path):
    write_dicom_series(tmp_path / "tp1", "20210304", "PGBM-007")
    (tmp_path / "tp1" / "0-readme.txt").write_text("not DICOM, sorted first")
    assert study_date_from_dicom(tmp_path / "tp1") == (datetime.date(2021, 3, 4), "PGBM-007")
    # Anonymised: no date, no ID; the name stands in for the ID.
    write_dicom_series(tmp_path / "anon" / "series", "", "")
    assert study_date_from_dicom(tmp_path / "anon") == (None, "DOE^JANE")


def test_dicom_reading_refuses_a_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(GliomaSuiteError, match="No DICOM file was found"):
        study_date_from_dicom(tmp_path)
    with pytest.raises(GliomaSuiteError, match="is not a folder"):
        study_date_from_dicom(tmp_path / "missing")


def test_same_patient_check():
    assert check_same_patient({"TP1": "P-1", "TP2": "P-1 ", "TP3": None, "TP4": ""}) == "P-1"
    assert check_same_patient([None, ""]) is None
    with pytest.raises(GliomaSuiteError, match="TP1 is of patient 'P-1' but TP3 is of patient 'P-2'"):
        check_same_patient({"TP1": "P-1", "TP2": None, "TP3": "P-2"})
    with pytest.raises(GliomaSuiteError, match="time point 1 is of patient 'A' but time point 2"):
        check_same_patient(["A", "B"])
