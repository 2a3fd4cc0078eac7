"""``gliomasuite report`` end to end, on inputs the real commands wrote.

A real BraTS case with its expert label map is scored by ``gliomasuite survival`` and followed up by
``gliomasuite followup`` (the expert map against a copy whose enhancing rim grew); the report of it
is then checked number by number against those inputs, as PDF text (pdftotext) and pages
(pdftoppm), and for what ``--deidentify`` must leave out, on a small DICOM study whose headers name
the patient. No model runs: every input is a label map.
"""

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from gliomasuite import cli
from gliomasuite.report.content import INTENDED_USE, RECURRENCE_NOT_AVAILABLE, REGION_VALUES, REGIONS

CASE = "BraTS2021_00006"
NAME, PATIENT_ID, BIRTH_DATE, STUDY_DATE, STUDY_ID = "DOE^JANE", "ID-12345", "19700101", "20240110", "ST-777"


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("GLIOMASUITE_DATA is not set (the real data in ../shared/data)")
    return Path(root)


def run(*args):
    """``gliomasuite --json-progress ARGS``: (exit status, the result, or the error event with its message)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--json-progress", *map(str, args)])
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    last = lines[-1] if lines else {}
    return code, last.get("result", last) if last.get("event") == "done" else last


def pdf_text(pdf: Path) -> str:
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True, capture_output=True).stdout
    text = text.decode("utf-8")
    return " ".join(text.split())


def page_count(pdf: Path, tmp: Path) -> int:
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm is not installed (apt-get install poppler-utils)")
    tmp.mkdir()
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(tmp / "page")], check=True)
    return len(list(tmp.glob("page*.png")))


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The real case, its survival and follow-up results, and the full report of them."""
    folder = data_root() / "brats" / CASE
    seg = folder / f"{CASE}_seg.nii.gz"
    tmp = tmp_path_factory.mktemp("report")
    code, last = run("survival", "--seg", seg, "--age", 37, "-o", tmp / "survival")
    assert code == 0, last
    image = sitk.ReadImage(str(seg))
    labels = sitk.GetArrayFromImage(image)
    grown = labels.copy()
    grown[ndimage.binary_dilation(labels == 4, iterations=3) & (labels > 0)] = 4  # the rim thickens
    later = sitk.GetImageFromArray(grown)
    later.CopyInformation(image)
    sitk.WriteImage(later, str(tmp / "later_seg.nii.gz"))
    code, last = run("followup", seg, tmp / "later_seg.nii.gz", "--labels", "brats2021",
                     "--dates", "2021-01-04", "2021-04-01", "-o", tmp / "followup")
    assert code == 0, last
    out = tmp / "out"
    code, last = run("report", folder, "--seg", seg, "--survival", tmp / "survival", "--followup", tmp / "followup",
                     "-o", out)
    assert code == 0, last
    return {"folder": folder, "seg": seg, "labels": labels, "spacing": image.GetSpacing(), "tmp": tmp, "out": out,
            "result": last, "report": json.loads((out / "report.json").read_text()),
            "survival": json.loads((tmp / "survival" / "survival.json").read_text()),
            "followup": json.loads((tmp / "followup" / "followup.json").read_text())}


# ----------------------------------------------------------------------------------------------
# the full report of a real case


def test_every_output_is_written_and_nothing_is_left_beside_it(case):
    out = case["out"]
    for name in ("report.pdf", "report.json", "report.csv", "figures/key_slices.png", "figures/projection.png",
                 "figures/survival.png", "figures/followup.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder
    assert case["result"]["pages"] in (1, 2)


def test_volumes_are_the_label_counts_times_the_voxel_volume(case):
    report, labels = case["report"], case["labels"]
    voxel_mm3 = float(np.prod(case["spacing"]))
    for region in REGIONS:
        count = int(np.isin(labels, REGION_VALUES[region]).sum())
        assert report["volumes"][region]["voxels"] == count
        assert report["volumes"][region]["cm3"] == round(count * voxel_mm3 / 1000, 2)
    assert report["volumes"]["WT"]["cm3"] == 137.91  # 137,911 voxels of 1 mm³
    assert report["lesions"]["count"] == 1 and report["lesions"]["hemisphere"] == "left"
    assert report["lesions"]["lobe"] == "not determined"
    assert report["gliomasuite_version"] and report["models"]["segmentation"] is None  # an expert map: no stamp


def test_survival_and_follow_up_numbers_are_those_the_commands_wrote(case):
    report, s, f = case["report"], case["survival"], case["followup"]
    rs = report["survival"]
    assert rs["median_months"] == s["median_survival"]["months"]
    assert rs["median_ci95_months"] == s["median_survival"]["ci95_months"]
    for months in ("12", "24"):
        assert rs["p_alive"][months]["percent"] == round(100 * s["p_alive"][months]["p"])
        assert rs["p_alive"][months]["lower_percent"] == round(100 * s["p_alive"][months]["lower"])
    assert rs["risk_group"] == s["risk_group"] and rs["som_node"] == [n + 1 for n in s["som"]["node"]]
    assert rs["model"] == s["model"]["name"] == "survival-brats2020-v1" and rs["age_years"] == 37
    assert report["patient"]["age_years"] == 37
    rf = report["followup"]
    for ours, theirs in zip(rf["timepoints"], f["timepoints"]):
        assert ours["volumes_cm3"] == {r: round(theirs["volumes_cm3"][r], 2) for r in REGIONS}
        assert ours["sum_of_products_mm2"] == round(theirs["sum_of_products_mm2"], 1)
    later = rf["timepoints"][1]
    assert later["change_from_baseline_percent"]["ET"] == round(f["timepoints"][1]["volume_change"]["ET"]
                                                                ["from_baseline_percent"], 1)
    diameters = f["timepoints"][1]["lesions"][0]["diameters"]
    assert later["lesions"][0]["long_mm"] == round(diameters["long_mm"], 1)
    assert rf["response"]["sentence"] == f["response"]["sentence"]
    recurrence = f["recurrence"]
    assert rf["recurrence"]["probability"] == recurrence.get("probability")
    assert rf["recurrence"]["text"] == (recurrence.get("sentence") or RECURRENCE_NOT_AVAILABLE)
    assert not [q for q in report["quality"]["flags"] if q["level"] == "warning"]  # consistent inputs


def test_the_csv_holds_every_number_once_with_its_unit(case):
    report = case["report"]
    rows = list(csv.DictReader(open(case["out"] / "report.csv", encoding="utf-8")))
    by_item = {(r["section"], r["item"]): r for r in rows}
    assert len(by_item) == len(rows)
    for region in REGIONS:
        row = by_item[("volumes", region)]
        assert float(row["value"]) == report["volumes"][region]["cm3"] and row["unit"] == "cm³"
    assert float(by_item[("survival", "median survival")]["value"]) == report["survival"]["median_months"]
    assert float(by_item[("follow-up later_seg", "ET change from nadir")]["value"]) == \
        report["followup"]["timepoints"][1]["change_from_nadir_percent"]["ET"]
    for row in rows:
        float(row["value"])  # numbers only


def test_the_pdf_shows_the_json_numbers_the_response_and_the_intended_use(case):
    report = case["report"]
    text = pdf_text(case["out"] / "report.pdf")
    for region in REGIONS:
        assert f"{report['volumes'][region]['cm3']:.2f}" in text, region
    assert "cm³" in text and "Δ" in text and INTENDED_USE in text
    assert words(report["followup"]["response"]["sentence"]) in text
    assert f"{report['survival']['median_months']:.1f} months" in text
    assert f"{report['survival']['p_alive']['12']['percent']}%" in text
    assert words("Recurrence: " + report["followup"]["recurrence"]["text"]) in text
    assert "Lobe: not determined" in text and CASE in text
    lesion = report["followup"]["timepoints"][1]["lesions"][0]
    assert f"{lesion['long_mm']:.1f} × {lesion['short_mm']:.1f}" in text


def test_the_pdf_renders_on_one_or_two_pages(case, tmp_path):
    assert page_count(case["out"] / "report.pdf", tmp_path / "pages") in (1, 2)


def test_the_same_inputs_give_the_same_bytes(case):
    again = case["tmp"] / "again"
    code, last = run("report", case["folder"], "--seg", case["seg"], "--survival", case["tmp"] / "survival",
                     "--followup", case["tmp"] / "followup", "-o", again)
    assert code == 0, last
    for name in ("report.pdf", "report.json", "report.csv", "figures/key_slices.png"):
        assert (again / name).read_bytes() == (case["out"] / name).read_bytes(), name


# ----------------------------------------------------------------------------------------------
# shorter reports, and outputs that must not be written


def test_missing_parts_give_a_shorter_report_not_an_error(case, tmp_path):
    # No --seg: the study folder's own label map. No survival, no follow-up, no age.
    code, last = run("report", case["folder"], "-o", tmp_path / "short")
    assert code == 0, last
    report = json.loads((tmp_path / "short" / "report.json").read_text())
    assert report["survival"] is None and report["followup"] is None and report["patient"]["age_years"] is None
    assert report["volumes"] == case["report"]["volumes"]
    assert sorted(p.name for p in (tmp_path / "short" / "figures").iterdir()) == ["key_slices.png", "projection.png"]
    text = pdf_text(tmp_path / "short" / "report.pdf")
    assert "Survival estimate" not in text and "Follow-up" not in text and "137.91" in text
    assert page_count(tmp_path / "short" / "report.pdf", tmp_path / "pages") <= case["result"]["pages"]


def test_a_survival_result_of_another_segmentation_is_flagged(case, tmp_path):
    code, last = run("report", case["folder"], "--seg", case["tmp"] / "later_seg.nii.gz", "--survival",
                     case["tmp"] / "survival", "--age", 40, "-o", tmp_path / "r")
    assert code == 0, last
    warnings = [q["text"] for q in json.loads((tmp_path / "r" / "report.json").read_text())["quality"]["flags"]
                if q["level"] == "warning"]
    assert any("age 37" in w for w in warnings)
    # The grown rim keeps the whole tumour: same WT, so no volume warning.
    assert not any("another segmentation" in w for w in warnings)


def test_an_existing_report_is_replaced_only_with_overwrite(case, tmp_path):
    out = tmp_path / "r"
    assert run("report", case["folder"], "-o", out)[0] == 0
    before = (out / "report.pdf").read_bytes()
    code, last = run("report", case["folder"], "--survival", case["tmp"] / "survival", "-o", out)
    assert code == 2 and "--overwrite" in last["message"]
    assert (out / "report.pdf").read_bytes() == before
    code, last = run("report", case["folder"], "--survival", case["tmp"] / "survival", "-o", out, "--overwrite")
    assert code == 0, last
    assert json.loads((out / "report.json").read_text())["survival"] is not None
    # A folder that holds something else is never replaced, even with --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, last = run("report", case["folder"], "-o", other, "--overwrite")
    assert code == 2 and "report.json" in last["message"] and (other / "notes.txt").read_text() == "mine"


def test_an_output_that_cannot_be_written_is_one_sentence_and_leaves_nothing(case, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, last = run("report", case["folder"], "-o", blocker / "report")
    assert code == 2 and "cannot be written" in last["message"] and "\n" not in last["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    code, last = run("report", case["folder"], "-o", blocker)
    assert code == 2 and "is a file" in last["message"]


def test_a_study_without_a_segmentation_is_refused_with_what_to_run(case, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    for modality in ("t1ce", "flair"):
        os.symlink(case["folder"] / f"{CASE}_{modality}.nii.gz", study / f"{CASE}_{modality}.nii.gz")
    code, last = run("report", study, "-o", tmp_path / "r")
    assert code == 2 and "gliomasuite segment" in last["message"] and "--seg" in last["message"]
    assert not (tmp_path / "r").exists()
    code, last = run("report", case["folder"], "--survival", tmp_path, "-o", tmp_path / "r")
    assert code == 2 and "survival.json" in last["message"]


# ----------------------------------------------------------------------------------------------
# a DICOM study: identifiers shown, then removed by --deidentify


def write_named_dicom(folder: Path, values: np.ndarray) -> Path:
    """A small MR series (SeriesDescription T1ce) whose headers name the patient, as a scanner's do."""
    from test_followup_cli import write_dicom_series

    return write_dicom_series(folder, values, {"0010|0010": NAME, "0010|0020": PATIENT_ID, "0010|0030": BIRTH_DATE,
                                               "0008|0020": STUDY_DATE, "0020|0010": STUDY_ID},
                              "1.2.826.0.1.3680043.2.1125.7.20240110")


def ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def synthetic_labels(shape=(40, 64, 64), et_radius=8):
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, (20, 32, 40), 14)] = 2
    labels[ball(shape, (20, 32, 40), et_radius)] = 4
    labels[ball(shape, (20, 32, 40), et_radius - 3)] = 1
    return labels


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    labels = synthetic_labels()
    head = ball(labels.shape, (20, 32, 32), 30)
    study = write_named_dicom(tmp / "jane_doe_study", 100 * head + 300 * (labels == 4) + 50 * (labels == 2))
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(sitk.ReadImage(sorted(str(p) for p in study.iterdir())))
    sitk.WriteImage(image, str(study / "DOE_JANE_seg.nii.gz"))
    later = sitk.GetImageFromArray(synthetic_labels(et_radius=11))
    later.CopyInformation(image)
    sitk.WriteImage(later, str(tmp / "later_seg.nii.gz"))
    code, last = run("followup", study / "DOE_JANE_seg.nii.gz", tmp / "later_seg.nii.gz", "--labels", "brats2021",
                     "--dates", "2024-01-10", "2024-04-02", "-o", tmp / "followup")
    assert code == 0, last
    return {"tmp": tmp, "study": study, "labels": labels}


def outputs_text(out: Path) -> str:
    return " ".join([pdf_text(out / "report.pdf"), (out / "report.json").read_text(encoding="utf-8"),
                     (out / "report.csv").read_text(encoding="utf-8")])


def test_a_dicom_study_shows_the_patient_and_study_from_its_headers(dicom_case):
    out = dicom_case["tmp"] / "named"
    code, last = run("report", dicom_case["study"], "--followup", dicom_case["tmp"] / "followup", "-o", out)
    assert code == 0, last
    report = json.loads((out / "report.json").read_text())
    assert report["patient"]["name"] == "DOE, JANE" and report["patient"]["id"] == PATIENT_ID
    assert report["patient"]["birth_date"] == "1970-01-01" and report["study"]["date"] == "2024-01-10"
    assert report["study"]["id"] == STUDY_ID and report["study"]["format"] == "DICOM"
    assert report["study"]["sequences"] == ["T1ce"] and "T1, T2, FLAIR" in " ".join(
        q["text"] for q in report["quality"]["flags"])
    assert not report["quality"]["brain_check"]["passed"]  # a 40-slice ball is no brain: flagged, not refused
    assert report["volumes"]["ET"]["voxels"] == int((dicom_case["labels"] == 4).sum())
    text = pdf_text(out / "report.pdf")
    assert "DOE, JANE" in text and PATIENT_ID in text and "1970-01-01" in text


def test_deidentify_leaves_no_name_id_birth_date_or_study_date_anywhere(dicom_case):
    out = dicom_case["tmp"] / "deidentified"
    code, last = run("report", dicom_case["study"], "--followup", dicom_case["tmp"] / "followup", "--deidentify",
                     "-o", out)
    assert code == 0, last
    everything = outputs_text(out)
    for secret in ("DOE", "JANE", PATIENT_ID, "12345", BIRTH_DATE, "1970-01-01", STUDY_DATE, "2024-01-10",
                   "2024-04-02", STUDY_ID, "jane_doe_study", str(dicom_case["tmp"])):
        # As a word: "DOE" must go, "does" stays (an underscore separates words here, as in DOE_JANE_seg).
        assert not re.search(rf"(?<![a-z0-9]){re.escape(secret)}(?![a-z0-9])", everything, re.IGNORECASE), secret
    report = json.loads((out / "report.json").read_text())
    assert report["patient"]["pseudonym"] == hashlib.sha256(PATIENT_ID.encode()).hexdigest()[:8]
    assert report["patient"]["name"] == report["study"]["id"] == "de-identified"
    assert report["patient"]["pseudonym"] in pdf_text(out / "report.pdf")
    assert [tp["label"] for tp in report["followup"]["timepoints"]] == ["TP1", "TP2"]
    assert report["figures"]["followup"] is None and not (out / "figures" / "followup.png").exists()
    assert report["inputs"] is None
    # The numbers stay.
    assert report["volumes"]["ET"]["voxels"] == int((dicom_case["labels"] == 4).sum())
    assert report["followup"]["response"]["category"] == "PD"


def test_a_stamped_label_map_names_its_model(case, tmp_path):
    from gliomasuite.outputs import write_image_atomically

    seg = tmp_path / "segmentation.nii.gz"
    write_image_atomically(sitk.ReadImage(str(case["seg"])), seg, model="vnet-brats-ensemble-v1")
    code, last = run("report", case["folder"], "--seg", seg, "-o", tmp_path / "r")
    assert code == 0, last
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["models"]["segmentation"] == "gliomasuite 0.1.0 vnet-brats-ensemble-v1"
    assert "vnet-brats-ensemble-v1" in pdf_text(tmp_path / "r" / "report.pdf")
