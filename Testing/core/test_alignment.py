"""Sequences that are not what they claim or not aligned (issue 16): a label map given as a scan is refused,
a misregistered FLAIR is named with its offset, and ``--coregister`` aligns it again, on real BraTS cases."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite import cli
from gliomasuite.alignment import (MISREGISTERED_MM, MIN_OUTLINE_DICE, misregistration_warnings, not_mr_images,
                                   outline_offsets, sequence_order_scores, swapped_sequences)
from gliomasuite.metrics import dice
from gliomasuite.study import load_study

DATA = Path(os.environ["GLIOMASUITE_DATA"]) if os.environ.get("GLIOMASUITE_DATA") else None
CASES = ("BraTS2021_00006", "Brats18_CBICA_AME_1", "Brats18_TCIA02_606_1", "Brats18_2013_3_1")
pytestmark = pytest.mark.skipif(DATA is None or not (DATA / "brats").is_dir(), reason="needs GLIOMASUITE_DATA")


def case_files(case):
    folder = DATA / "brats" / case
    return {m: folder / f"{case}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")}


@pytest.mark.parametrize("case", CASES)
def test_real_co_registered_studies_raise_no_alarm(case):
    study = load_study(case_files(case))
    assert not_mr_images(study.images) == [] and misregistration_warnings(study.images) == []
    assert swapped_sequences(study.images) == ([], [])
    for offset, overlap in outline_offsets(study.images).values():
        assert offset < MISREGISTERED_MM / 3 and overlap > MIN_OUTLINE_DICE + 0.02  # with a margin


def shifted_flair(case, folder: Path, shift_mm=(10.0, 0.0, 0.0)) -> dict:
    files = case_files(case)
    flair = sitk.ReadImage(str(files["flair"]))
    moved = sitk.Resample(flair, flair, sitk.TranslationTransform(3, shift_mm), sitk.sitkLinear, 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(moved, str(folder / "moved_flair.nii.gz"))
    return {**files, "flair": folder / "moved_flair.nii.gz"}


def run(args, capsys):
    code = cli.main(["--json-progress", *map(str, args)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    notes = [line["message"] for line in lines if line.get("event") == "note"]
    return code, lines[-1], notes


def test_a_flair_shifted_10_mm_is_named_and_coregister_aligns_it(tmp_path, capsys):
    case = "BraTS2021_00006"
    files = shifted_flair(case, tmp_path)
    warnings = misregistration_warnings(load_study(files).images)
    assert len(warnings) == 1 and warnings[0].startswith("FLAIR") and "--coregister" in warnings[0]
    offset = outline_offsets(load_study(files).images)["flair"][0]
    assert offset == pytest.approx(10.0, abs=1.0)

    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "brats" / case / f"{case}_seg.nii.gz"))) > 0
    scores = {}
    for mode in ("as given", "coregistered"):
        out = tmp_path / f"{mode.replace(' ', '_')}.nii.gz"
        args = ["segment", *(x for m, p in files.items() for x in (f"--{m}", p)), "-o", out]
        code, last, notes = run(args + (["--coregister"] if mode == "coregistered" else []), capsys)
        assert code == 0, last
        misregistered = [n for n in notes if "looks misregistered" in n]
        assert bool(misregistered) == (mode == "as given"), notes
        scores[mode] = dice(sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0, truth)
        if mode == "coregistered":
            assert any("FLAIR was registered rigidly to the T1ce" in n for n in notes)
    print(f"WT Dice with the FLAIR shifted 10 mm: {scores}")
    assert scores["coregistered"] > scores["as given"] + 0.03, scores


def test_a_label_map_given_as_the_t1ce_is_not_segmented(tmp_path, capsys):
    case = "BraTS2021_00006"
    files = {**case_files(case), "t1ce": DATA / "brats" / case / f"{case}_seg.nii.gz"}
    problems = not_mr_images(load_study(files).images)
    assert len(problems) == 1 and problems[0].startswith("T1ce") and "label map or mask" in problems[0]
    out = tmp_path / "seg.nii.gz"
    code, last, _ = run(["segment", *(x for m, p in files.items() for x in (f"--{m}", p)), "-o", out], capsys)
    assert code == 0 and any("label map or mask" in p for p in last["result"]["brain_check"])
    assert not np.any(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))  # nothing segmented


@pytest.mark.parametrize("first, second", [(CASES[0], CASES[1]), (CASES[2], CASES[3])])
def test_t2_and_flair_of_another_patient_are_named(first, second):
    files = {**{m: p for m, p in case_files(first).items() if m in ("t1", "t1ce")},
             **{m: p for m, p in case_files(second).items() if m in ("t2", "flair")}}
    warnings = misregistration_warnings(load_study(files).images)
    assert [w.split()[0] for w in warnings] == ["T2", "FLAIR"] and all("another patient" in w for w in warnings)


# Every swap of two sequences across the T1/T1ce and T2/FLAIR pairs is refused; T2 and FLAIR swapped are warned;
# T1 and T1ce swapped are not checked (a tumour without enhancement cannot tell them apart).
ACROSS = [("t1", "t2"), ("t1", "flair"), ("t1ce", "t2"), ("t1ce", "flair")]


@pytest.mark.parametrize("case", CASES)
def test_sequences_swapped_across_the_pairs_are_refused_and_t2_flair_swapped_warned(case):
    images = load_study(case_files(case)).images
    for a, b in ACROSS:
        problems, warnings = swapped_sequences(dict(images, **{a: images[b], b: images[a]}))
        assert len(problems) == 1 and "look swapped" in problems[0] and warnings == [], (a, b, problems)
    problems, warnings = swapped_sequences(dict(images, t2=images["flair"], flair=images["t2"]))
    assert problems == [] and len(warnings) == 1 and warnings[0].startswith("T2 and FLAIR look swapped")
    scores = sequence_order_scores(images)
    assert scores["pairing"] > 0.3 and scores["flair_vs_t2"] > 0.05, scores  # as given: clear of 0
    # Three sequences: nothing to compare, nothing said.
    assert swapped_sequences({m: images[m] for m in ("t1ce", "t2", "flair")}) == ([], [])


def test_t1ce_and_flair_swapped_are_not_segmented_unless_the_user_insists(tmp_path, capsys):
    case = "Brats18_2013_3_1"
    files = case_files(case)
    files["t1ce"], files["flair"] = files["flair"], files["t1ce"]
    out = tmp_path / "seg.nii.gz"
    args = ["segment", *(x for m, p in files.items() for x in (f"--{m}", p)), "-o", out]
    code, last, _ = run(args, capsys)
    assert code == 0 and any("look swapped" in p for p in last["result"]["brain_check"])
    assert not np.any(sitk.GetArrayFromImage(sitk.ReadImage(str(out))))  # nothing segmented
    code, last, notes = run(args + ["--skip-brain-check", "--overwrite"], capsys)
    assert code == 0 and last["result"]["brain_check"] == []
    assert any("look swapped" in n for n in notes)  # still said, in the warning


def test_a_flair_covering_part_of_the_brain_is_said_so_not_called_misregistered(tmp_path):
    """As Brats18_2013_20_1's FLAIR (a slab over the front two thirds of the brain): the outlines differ
    by 20 mm, but the FLAIR lies within the T1ce's brain."""
    images = load_study(case_files("BraTS2021_00006")).images
    flair = sitk.GetArrayFromImage(images["flair"])
    rows = np.flatnonzero(flair.any(axis=(0, 2)))
    flair[:, rows[0] + int(0.65 * (rows[-1] - rows[0])):, :] = 0  # keep 65 % of the brain along the rows
    cut = sitk.GetImageFromArray(flair)
    cut.CopyInformation(images["flair"])
    warnings = misregistration_warnings(dict(images, flair=cut))
    assert len(warnings) == 1 and warnings[0].startswith("FLAIR covers only") and "misregistered" not in warnings[0]
