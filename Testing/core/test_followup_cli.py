"""``gliomasuite followup`` end to end: real label pairs, a real scan against a moved copy of itself, bad input.

Label-map time points need no network, so most of these run in seconds; the moved-copy test segments
one real case twice with the shipped model.
"""

import json
import csv
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite import cli
from gliomasuite.followup.labelmaps import detect_convention, to_brats
from gliomasuite.errors import GliomaSuiteError


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("GLIOMASUITE_DATA is not set (the real data in ../shared/data)")
    return Path(root)


def run(args, capsys):
    args = [str(a) for a in args]
    if args[0] == "followup" and "--labels" not in args:
        args += ["--labels", "brats2021"]  # the synthetic maps below use BraTS 2021 labels
    code = cli.main(["--json-progress", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return code, lines[-1] if lines else {}


def labelmap(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def tumour(shape=(40, 64, 64), centre=(20, 32, 32), et_radius=8, ed_radius=14):
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, centre, ed_radius)] = 2
    labels[ball(shape, centre, et_radius)] = 4
    labels[ball(shape, centre, max(et_radius - 3, 0)) & (et_radius > 3)] = 1
    return labels


# ----------------------------------------------------------------------------------------------
# label conventions


@pytest.mark.parametrize("values, convention", [
    ([0, 1], "binary"), ([0, 1, 2, 3], "brats2023"), ([0, 2, 3, 4], "post-treatment"), ([0], "brats2021")])
def test_label_values_that_say_their_convention_are_read_without_asking(values, convention):
    assert detect_convention(values)[0] == convention


@pytest.mark.parametrize("values", [[0, 2, 4], [0, 1, 2, 4], [0, 4]])
def test_a_4_without_a_3_is_ambiguous_and_refused_with_the_two_readings(values):
    with pytest.raises(GliomaSuiteError, match="resection cavity"):
        detect_convention(values)


def test_post_treatment_labels_keep_the_cavity_apart_from_enhancing_tumour():
    read = to_brats(np.array([0, 1, 2, 3, 4]), "post-treatment")
    assert read.labels.tolist() == [0, 1, 2, 4, 0] and read.cavity.tolist() == [False] * 4 + [True]
    with pytest.raises(GliomaSuiteError, match="label value"):
        to_brats(np.array([0, 5]), "brats2021")


# ----------------------------------------------------------------------------------------------
# synthetic label pairs: each RANO outcome, and the outputs


def test_growing_enhancing_tumour_is_progression_with_every_output_written(tmp_path, capsys):
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour(et_radius=8))
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour(et_radius=10))
    out = tmp_path / "out"
    code, last = run(["followup", a, b, "--dates", "2024-01-10", "2024-04-02", "-o", out], capsys)
    assert code == 0, last
    result = json.loads((out / "followup.json").read_text())
    assert result["response"]["category"] == "PD" and result["gliomasuite_version"]
    assert "Progressive disease" in result["response"]["sentence"]
    base, follow = result["timepoints"]
    assert base["is_baseline"] and follow["days_from_baseline"] == 83
    # A 16 mm ball against a 20 mm one: products grow by about (20/16)^2 - 1 = 56 %.
    grown = follow["sum_of_products_mm2"] / base["sum_of_products_mm2"] - 1
    assert 0.4 < grown < 0.75
    assert len(base["lesions"]) == len(follow["lesions"]) == 1 and follow["lesions"][0]["status"] == "continuing"
    for name in ("followup.csv", "followup.png", "segmentations/a_seg.nii.gz", "segmentations/b_seg.nii.gz"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "followup.csv")))
    assert {r["region"] for r in rows} == {"NCR", "ED", "ET", "TC", "WT"} and len(rows) == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_dated_t1ce_scans_get_a_recurrence_probability_and_a_where_next_map(tmp_path, capsys):
    """Two dated T1ce scans with the reader's masks: followup.json's recurrence entry holds the probability,
    the threshold and the call, and the map is an image on the baseline's grid."""
    scans, masks = [], []
    for i, radius in enumerate((8, 11)):
        labels = tumour(et_radius=radius)
        head = ball(labels.shape, (20, 32, 32), 30)
        values = np.where(head, 500, 0) + 600 * (labels == 4) + 100 * (labels == 2)
        scans.append(tmp_path / f"scan{i}_t1ce.nii.gz")
        image = sitk.GetImageFromArray(values.astype(np.int16))
        sitk.WriteImage(image, str(scans[-1]))
        masks.append(labelmap(tmp_path / f"scan{i}_seg.nii.gz", labels))
    out = tmp_path / "out"
    code, last = run(["followup", *scans, "--seg", *masks, "--modality", "t1ce", "--registration", "none",
                      "--dates", "2024-01-10", "2024-04-02", "-o", out], capsys)
    assert code == 0, last
    recurrence = json.loads((out / "followup.json").read_text())["recurrence"]
    assert recurrence["available"] and 0.0 <= recurrence["probability"] <= 1.0 and recurrence["threshold"] == 0.5
    assert recurrence["called"] == (recurrence["probability"] >= 0.5) and recurrence["reasons"] == []
    assert recurrence["model"] == "recurrence-sim-v2" and "card" in recurrence and recurrence["limits"]
    assert last["result"]["recurrence_probability"] == recurrence["probability"]
    probability_map = sitk.ReadImage(str(out / recurrence["map"]))
    baseline = sitk.ReadImage(str(scans[0]))
    assert probability_map.GetSize() == baseline.GetSize() and probability_map.GetSpacing() == baseline.GetSpacing()
    values = sitk.GetArrayFromImage(probability_map)
    assert 0.0 <= values.min() and values.max() <= 1.0

    code, _ = run(["followup", *scans, "--seg", *masks, "--modality", "t1ce", "--registration", "none",
                   "--dates", "2024-01-10", "2024-04-02", "--no-recurrence", "-o", tmp_path / "without"], capsys)
    assert code == 0
    skipped = json.loads((tmp_path / "without" / "followup.json").read_text())["recurrence"]
    assert skipped["available"] is False and not (tmp_path / "without" / "recurrence").exists()

    # another registered recurrence model, by name; a file that is not one gives a sentence and no number
    same = ["followup", *scans, "--seg", *masks, "--modality", "t1ce", "--registration", "none",
            "--dates", "2024-01-10", "2024-04-02"]
    code, _ = run([*same, "--recurrence-model", "recurrence-sim-v1", "-o", tmp_path / "v1"], capsys)
    assert code == 0
    older = json.loads((tmp_path / "v1" / "followup.json").read_text())["recurrence"]
    assert older["model"] == "recurrence-sim-v1" and older["probability"] is not None
    assert older["probability"] != recurrence["probability"]  # another network, another number
    not_weights = tmp_path / "not-weights.npz"
    not_weights.write_bytes(b"not a weights file")
    code, _ = run([*same, "--recurrence-model", str(not_weights), "-o", tmp_path / "bad"], capsys)
    assert code == 0  # the follow-up itself stands
    bad = json.loads((tmp_path / "bad" / "followup.json").read_text())["recurrence"]
    assert bad["available"] is False and "probability" not in bad and "cannot be read" in bad["sentence"]


def test_label_maps_alone_get_no_recurrence_number_and_say_why(tmp_path, capsys):
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour(et_radius=8))
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour(et_radius=10))
    code, _ = run(["followup", a, b, "--dates", "2024-01-10", "2024-04-02", "-o", tmp_path / "o"], capsys)
    assert code == 0
    recurrence = json.loads((tmp_path / "o" / "followup.json").read_text())["recurrence"]
    assert recurrence["probability"] is None and recurrence["called"] is None and recurrence["map"] is None
    assert "T1ce" in recurrence["sentence"]


def test_a_tumour_that_shrank_then_regrew_is_judged_against_the_nadir(tmp_path, capsys):
    maps = [labelmap(tmp_path / f"t{i}_seg.nii.gz", tumour(et_radius=r)) for i, r in enumerate((12, 7, 9))]
    code, _ = run(["followup", *maps, "--dates", "2024-01-01", "2024-03-01", "2024-05-01", "-o", tmp_path / "o"],
                  capsys)
    assert code == 0
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    first, last = result["responses"]
    assert first["category"] == "PR"
    # Still smaller than at baseline, but (9/7)^2 - 1 = 65 % above the nadir: progression.
    assert last["category"] == "PD"
    assert last["bidimensional"]["enhancing"]["percent_from_baseline"] < 0


def test_no_enhancing_tumour_left_is_a_complete_response_not_an_error(tmp_path, capsys):
    after = tumour()
    after[after != 0] = 2  # only edema left: no enhancing tumour
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour())
    b = labelmap(tmp_path / "b_seg.nii.gz", after)
    code, last = run(["followup", a, b, "-o", tmp_path / "o"], capsys)
    assert code == 0, last
    assert last["result"]["category"] == "CR"


def test_a_new_measurable_lesion_is_progression_and_named(tmp_path, capsys):
    before = tumour()
    after = tumour()
    after[ball(after.shape, (20, 32, 56), 6)] = 4
    code, last = run(["followup", labelmap(tmp_path / "a_seg.nii.gz", before),
                      labelmap(tmp_path / "b_seg.nii.gz", after), "-o", tmp_path / "o"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    assert result["response"]["category"] == "PD" and "new measurable enhancing lesion" in result["response"]["sentence"]
    assert sum(les["status"] == "new" for les in result["timepoints"][1]["lesions"]) == 1


def test_time_points_can_be_named(tmp_path, capsys):
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour())
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour())
    code, _ = run(["followup", a, b, "--names", "post-RT", "week 12", "-o", tmp_path / "o"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    assert [tp["label"] for tp in result["timepoints"]] == ["post-RT", "week 12"]
    assert (tmp_path / "o" / "segmentations" / "week_12.nii.gz").is_file()


def test_progression_within_12_weeks_of_radiotherapy_is_preliminary(tmp_path, capsys):
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour(et_radius=8))
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour(et_radius=11))
    code, last = run(["followup", a, b, "--dates", "2024-01-10", "2024-02-20", "--rt-end", "2024-01-05",
                      "-o", tmp_path / "o"], capsys)
    assert code == 0
    assert last["result"]["category"] == "PD" and last["result"]["preliminary"]
    assert "confirm" in last["result"]["sentence"]


# ----------------------------------------------------------------------------------------------
# bad input: one sentence, exit 2, nothing written


def _refused(args, capsys, *words):
    code, last = run(args, capsys)
    assert code == 2, last
    assert last["event"] == "error"
    for word in words:
        assert word.lower() in last["message"].lower(), last["message"]


def test_bad_follow_ups_are_refused_in_one_sentence_and_leave_nothing(tmp_path, capsys):
    a = labelmap(tmp_path / "a_seg.nii.gz", tumour())
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour())
    small = labelmap(tmp_path / "c_seg.nii.gz", tumour(shape=(30, 64, 64), centre=(15, 32, 32)))
    out = tmp_path / "o"
    _refused(["followup", a, "-o", out], capsys, "at least two time points")
    _refused(["followup", a, b, "--dates", "2024-01-01", "2024-01-01", "-o", out], capsys, "same date")
    _refused(["followup", a, b, "--dates", "2024-01-01", "-o", out], capsys, "one value per time point")
    _refused(["followup", a, b, "--dates", "2024-13-01", "2024-01-01", "-o", out], capsys, "2024-13-01")
    _refused(["followup", a, small, "-o", out], capsys, "grid")
    _refused(["followup", a, tmp_path / "missing_seg.nii.gz", "-o", out], capsys, "does not exist")
    two_and_four = tumour()
    two_and_four[two_and_four == 1] = 2
    _refused(["followup", a, labelmap(tmp_path / "d_seg.nii.gz", two_and_four), "-o", out, "--labels", "auto"],
             capsys, "--labels")
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("a reader's notes")
    _refused(["followup", a, b, "-o", out], capsys, "--overwrite")
    assert (out / "mine.txt").read_text() == "a reader's notes"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_time_point_no_shipped_model_can_segment_is_named_with_the_fix(tmp_path, capsys):
    root = data_root()
    case = root / "brats" / "BraTS2021_00006"
    only_t1ce = tmp_path / "tp2"
    only_t1ce.mkdir()
    (only_t1ce / "scan_t1ce.nii.gz").symlink_to(case / "BraTS2021_00006_t1ce.nii.gz")
    _refused(["followup", case, only_t1ce, "--seg", case / "BraTS2021_00006_seg.nii.gz", "-",
              "-o", tmp_path / "o"], capsys, "tp2", "--seg")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------
# real data


UCSF = {"100001": None, "100011": None, "100116": None, "100118": "PD"}


@pytest.mark.parametrize("patient", sorted(UCSF))
def test_real_ucsf_post_treatment_label_pairs(tmp_path, capsys, patient):
    folder = data_root() / "longitudinal" / "ucsf-alptdg-segs" / patient
    t1, t2 = (folder / f"{patient}_time{i}_seg.nii.gz" for i in (1, 2))
    code, last = run(["followup", t1, t2, "--labels", "post-treatment", "-o", tmp_path / "o"], capsys)
    assert code == 0, last
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    # Volumes in the output are the label counts of the files (1 mm voxels), read the post-treatment way.
    for tp, path in zip(result["timepoints"], (t1, t2)):
        values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert tp["volumes_cm3"]["ET"] == pytest.approx((values == 3).sum() / 1000, abs=1e-3)
        assert tp["cavity_cm3"] == pytest.approx((values == 4).sum() / 1000, abs=1e-3)
    response = result["response"]
    assert response["category"] in ("CR", "PR", "SD", "PD")
    if UCSF[patient]:
        assert response["category"] == UCSF[patient]
    print(patient, response["category"], response["volumetric"]["category"], response["sentence"])


def test_real_scan_against_a_moved_copy_of_itself_is_stable(tmp_path, capsys):
    case = data_root() / "brats" / "BraTS2021_00006"
    moved = tmp_path / "moved"
    moved.mkdir()
    rotation = sitk.Euler3DTransform()
    reference = sitk.ReadImage(str(case / "BraTS2021_00006_t1ce.nii.gz"))
    centre = reference.TransformContinuousIndexToPhysicalPoint([s / 2 for s in reference.GetSize()])
    rotation.SetCenter(centre)
    rotation.SetRotation(np.deg2rad(6), np.deg2rad(-4), np.deg2rad(3))
    rotation.SetTranslation((5.0, -4.0, 3.0))
    for modality in ("t1", "t1ce", "t2", "flair"):
        image = sitk.ReadImage(str(case / f"BraTS2021_00006_{modality}.nii.gz"))
        sitk.WriteImage(sitk.Resample(image, image, rotation, sitk.sitkLinear, 0.0),
                        str(moved / f"copy_{modality}.nii.gz"))
    code, last = run(["followup", case, moved, "--dates", "2021-01-01", "2021-03-01", "-o", tmp_path / "o"], capsys)
    assert code == 0, last
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    follow = result["timepoints"][1]
    assert follow["registration"]["correlation"] > 0.9 and not follow["registration"]["warning"]
    assert abs(follow["volume_change"]["WT"]["from_baseline_percent"]) < 5
    assert abs(follow["volume_change"]["TC"]["from_baseline_percent"]) < 5
    # Measured: ET +9 %. Resampling the copy blurs the enhancing rim and the network labels a blurred rim
    # thicker (a windowed-sinc copy gave +24 %), so enhancing volume is the least stable measure here;
    # the bidimensional products, which RANO reads first, moved 2 %.
    assert abs(follow["volume_change"]["ET"]["from_baseline_percent"]) < 12
    assert result["responses"][0]["bidimensional"]["enhancing"]["percent_from_baseline"] < 5
    assert result["response"]["category"] == "SD" and not any(les["status"] == "new" for les in follow["lesions"])
    assert sitk.ReadTransform(str(tmp_path / "o" / follow["files"]["transform"])) is not None
    print(json.dumps({k: follow["volume_change"][k]["from_baseline_percent"] for k in ("ET", "TC", "WT")}),
          follow["registration"])


def test_a_reader_who_shortens_a_diameter_gets_the_response_judged_again(tmp_path, capsys):
    from gliomasuite.followup.pipeline import remeasure

    a = labelmap(tmp_path / "a_seg.nii.gz", tumour(et_radius=8))
    b = labelmap(tmp_path / "b_seg.nii.gz", tumour(et_radius=10))
    assert run(["followup", a, b, "-o", tmp_path / "o"], capsys)[0] == 0
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    assert result["response"]["category"] == "PD"
    base = result["timepoints"][0]["lesions"][0]["diameters"]
    # The reader measures the follow-up lesion as the baseline's: no change, so stable disease.
    remeasure(result, "b_seg", 1, base["long_mm"], base["short_mm"])
    assert result["response"]["category"] == "SD"
    assert result["timepoints"][1]["sum_of_products_mm2"] == pytest.approx(base["product_mm2"], abs=0.1)
    ends = [[[0.0, 0.0, 5.0], [12.0, 0.0, 5.0]], [[6.0, -4.0, 5.0], [6.0, 4.0, 5.0]]]
    remeasure(result, "b_seg", 1, 8.0, 12.0, *ends)  # too small to measure: nothing measurable is left
    measured = result["timepoints"][1]["lesions"][0]["diameters"]
    assert not measured["measurable"] and measured["long_mm"] == 12.0 and measured["edited"]
    assert measured["long_ends_lps"] == ends[1] and measured["short_ends_lps"] == ends[0]  # swapped with them
    with pytest.raises(GliomaSuiteError, match="no measured enhancing lesion 7"):
        remeasure(result, "b_seg", 7, 10.0, 10.0)


def write_dicom_series(folder, values, tags, uid):
    """A small MR series (SeriesDescription T1ce, 1 mm, axial) with the given header ``tags``, as a scanner
    writes one; ``uid`` roots its study and series UIDs. Shared with test_report."""
    folder.mkdir(parents=True)
    volume = sitk.GetImageFromArray(values.astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.GetDepth()):
        plane = volume[:, :, z]
        for tag, value in (*tags.items(), ("0008|0060", "MR"), ("0008|103e", "T1ce"), ("0020|000d", uid + ".1"),
                           ("0020|000e", uid + ".2"), ("0020|0013", str(z + 1)), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0028|0030", "1\\1"),
                           ("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, z)))))):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(plane)
    return folder


def write_dicom_timepoint(folder, values, study_date, patient_id):
    """A dated scan of one patient: StudyDate and PatientID in its headers."""
    return write_dicom_series(folder, values, {"0008|0020": study_date, "0010|0020": patient_id},
                              "1.2.826.0.1.3680043.2.1125.1." + study_date)


def test_dicom_time_points_are_dated_by_their_headers_and_must_be_one_patient(tmp_path, capsys):
    before, after = tumour(et_radius=8), tumour(et_radius=11)
    scan = lambda labels: 100 + 300 * (labels == 4) + 50 * (labels == 2)  # noqa: E731
    late = write_dicom_timepoint(tmp_path / "late", scan(after), "20240402", "P-1")
    early = write_dicom_timepoint(tmp_path / "early", scan(before), "20240110", "P-1")
    segs = []
    for name, labels, folder in (("late_seg.nii.gz", after, late), ("early_seg.nii.gz", before, early)):
        reference = sitk.ReadImage(sorted(str(p) for p in folder.iterdir()))
        image = sitk.GetImageFromArray(labels)
        image.CopyInformation(reference)
        sitk.WriteImage(image, str(tmp_path / name))
        segs.append(tmp_path / name)
    # Given latest first: the StudyDate headers put them in order.
    code, last = run(["followup", late, early, "--seg", *segs, "--registration", "none", "-o", tmp_path / "o"],
                     capsys)
    assert code == 0, last
    result = json.loads((tmp_path / "o" / "followup.json").read_text())
    assert [tp["label"] for tp in result["timepoints"]] == ["early", "late"]
    assert [tp["date"] for tp in result["timepoints"]] == ["2024-01-10", "2024-04-02"]
    assert result["response"]["category"] == "PD"
    other = write_dicom_timepoint(tmp_path / "other", scan(after), "20240501", "P-2")
    _refused(["followup", early, other, "--seg", segs[1], segs[0], "--registration", "none", "-o", tmp_path / "p"],
             capsys, "P-1", "P-2")


def test_a_time_point_without_t1ce_says_the_enhancing_assessment_is_impossible(tmp_path, capsys):
    case = data_root() / "brats" / "BraTS2021_00006"
    no_t1ce = tmp_path / "tp2"
    no_t1ce.mkdir()
    for modality in ("t1", "t2", "flair"):
        (no_t1ce / f"scan_{modality}.nii.gz").symlink_to(case / f"BraTS2021_00006_{modality}.nii.gz")
    _refused(["followup", case, no_t1ce, "--seg", case / "BraTS2021_00006_seg.nii.gz", "-",
              "-o", tmp_path / "o"], capsys, "tp2 has no T1ce", "enhancing", "--seg")


def test_auto_labels_on_real_ucsf_files_read_the_post_treatment_convention_or_ask(tmp_path, capsys):
    root = data_root() / "longitudinal" / "ucsf-alptdg-segs"
    pair = lambda p: [root / p / f"{p}_time{i}_seg.nii.gz" for i in (1, 2)]  # noqa: E731
    code, last = run(["followup", *pair("100001"), "--labels", "auto", "-o", tmp_path / "a"], capsys)
    assert code == 0, last
    result = json.loads((tmp_path / "a" / "followup.json").read_text())
    assert result["label_convention"] == "post-treatment"
    assert result["timepoints"][0]["cavity_cm3"] == pytest.approx(28.445, abs=1e-3)
    # {2, 4} at both time points: a BraTS 2021 map without necrosis, or a post-treatment one with a
    # cavity and no enhancing tissue. Calling the cavity enhancing tumour would be wrong: it asks.
    _refused(["followup", *pair("100116"), "--labels", "auto", "-o", tmp_path / "b"], capsys, "--labels")
