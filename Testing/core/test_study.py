"""Study loading and validation: modality recognition by name, formats, DICOM, and every bad input.

Most tests build small synthetic volumes in ``tmp_path`` with SimpleITK. The real-data test reads
``$GLIOMASUITE_DATA/brats`` and ``$GLIOMASUITE_DATA/brats-unlabelled`` and is skipped without it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite.errors import StudyError
from gliomasuite.modalities import MODALITIES, display_name, identify_modality, identify_text, is_segmentation
from gliomasuite.study import Study, find_segmentation, find_study_files, load_image, load_study

# Each modality gets its own intensity level so a test can tell which file ended up where.
LEVEL = {"t1": 100.0, "t1ce": 200.0, "t2": 300.0, "flair": 400.0}
SIZE = (16, 18, 12)  # x, y, z


def make_volume(level=100.0, size=SIZE, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=None, seed=0, dtype=np.float32):
    """A small 3D volume: a bright blob on a noisy background around ``level``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: size[2], : size[1], : size[0]]
    centre = np.array(size[::-1]) / 2.0
    blob = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < (min(size) / 3) ** 2
    arr = level + 10.0 * rng.standard_normal(size[::-1]) + 50.0 * blob
    image = sitk.GetImageFromArray(arr.astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def write_study(folder: Path, names: dict, **geometry) -> dict:
    """Write one volume per modality to ``folder`` under the given file names; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (modality, name) in enumerate(names.items()):
        path = folder / name
        sitk.WriteImage(make_volume(LEVEL[modality], seed=i, **geometry), str(path))
        paths[modality] = path
    return paths


def brats21(case="BraTS2021_00001"):
    return {m: f"{case}_{m}.nii.gz" for m in MODALITIES}


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time (to prove nothing is written)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def assert_refused(source, folder: Path, *words, **kwargs) -> str:
    """load_study refuses with a StudyError whose message has all ``words``; nothing is written."""
    before = snapshot(folder)
    with pytest.raises(StudyError) as info:
        load_study(source, **kwargs)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    assert "Traceback" not in message and "sitk::ERROR" not in message and ".cxx" not in message
    assert "\n" not in message
    assert snapshot(folder) == before
    return message


def assert_levels(study: Study):
    """Each modality's image is the one written for it (told apart by its intensity level)."""
    assert tuple(study.images) == tuple(m for m in MODALITIES if m in study.images)
    for modality, image in study.images.items():
        assert image.GetPixelID() == sitk.sitkFloat32
        assert abs(float(np.median(study.array(modality))) - LEVEL[modality]) < 25, modality


# ---------------------------------------------------------------------------------------------
# Naming conventions


@pytest.mark.parametrize(
    "name, expected",
    [
        # BraTS 2021
        ("BraTS2021_00006_t1.nii.gz", "t1"),
        ("BraTS2021_00006_t1ce.nii.gz", "t1ce"),
        ("BraTS2021_00006_t2.nii.gz", "t2"),
        ("BraTS2021_00006_flair.nii.gz", "flair"),
        ("Brats18_TCIA01_201_1_T1CE.NII.GZ", "t1ce"),
        # BraTS 2023
        ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"),
        ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"),
        ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
        ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"),
        # site / scanner names
        ("T1Gd.nrrd", "t1ce"),
        ("t1gd.nii", "t1ce"),
        ("T1post.mha", "t1ce"),
        ("T1-post.nii.gz", "t1ce"),
        ("T1_post.nii.gz", "t1ce"),
        ("T1C.nii.gz", "t1ce"),
        ("T1+C.nii.gz", "t1ce"),
        ("T1_contrast.nhdr", "t1ce"),
        ("patient 7 T1 contrast.nii.gz", "t1ce"),
        ("MPRAGE.nii.gz", "t1"),
        ("MPRAGE_Gd.nii.gz", "t1ce"),
        ("T1_MPRAGE_post.nii.gz", "t1ce"),
        ("sub-01_ce-gadolinium_T1w.nii.gz", "t1ce"),
        ("sub-01_T1w.nii.gz", "t1"),
        ("T1.mhd", "t1"),
        ("t1_pre.nii", "t1"),
        ("T2w.nii", "t2"),
        ("T2.nii.gz", "t2"),
        ("ax_t2_tse.nrrd", "t2"),
        ("FLAIR.nii.gz", "flair"),
        ("T2-FLAIR.nii.gz", "flair"),
        ("T2_FLAIR.nii.gz", "flair"),
        ("t2flair.nii.gz", "flair"),
        ("3D_FLAIR_sag.nii.gz", "flair"),
        ("/data/T2 scans/case_t1ce.nii.gz", "t1ce"),  # only the last component counts
        # not one of ours, or ambiguous
        ("BraTS2021_00006_seg.nii.gz", None),
        ("BraTS-GLI-00001-000-seg.nii.gz", None),
        ("tumour_label.nrrd", None),
        ("brainmask.nii.gz", None),
        ("DWI.nii.gz", None),
        ("ADC.nii.gz", None),
        ("T2star.nii.gz", None),
        ("t1_to_t2.nii.gz", None),
        ("scan3.nii.gz", None),
        ("", None),
    ],
)
def test_identify_modality(name, expected):
    assert identify_modality(name) == expected


@pytest.mark.parametrize(
    "description, expected",
    [
        ("AX T1 SE +C", "t1ce"),
        ("AX T1 POST GD", "t1ce"),
        ("Sag 3D FLAIR", "flair"),
        ("AX T2 FSE", "t2"),
        ("Ax T2*GRE", None),
        ("3D_T1_MPRAGE", "t1"),
        ("AX T1 FLAIR", "t1"),  # T1-weighted FLAIR is a T1 sequence
        ("Ax T1 FLAIR POST", "t1ce"),
        ("AX DWI", None),
        ("sT1W_3D_TFE", "t1"),  # Philips
        ("sT2W_FLAIR", "flair"),
        ("t2_tirm_tra_dark-fluid", "flair"),  # Siemens FLAIR
        ("t1_mprage_sag_p2_iso", "t1"),
        ("t1_se_tra_KM", "t1ce"),  # Kontrastmittel
        ("AX T1 FS POST", "t1ce"),
        ("Ax T1 BRAVO POST", "t1ce"),
        ("Sag CUBE FLAIR", "flair"),
        ("AX T2 PROPELLER", "t2"),
    ],
)
def test_identify_series_description(description, expected):
    assert identify_text(description) == expected


def test_segmentation_names():
    for name in ("BraTS2021_00006_seg.nii.gz", "case-seg.nii.gz", "labels.nrrd", "tumor_mask.mha", "Label.nii"):
        assert is_segmentation(name), name
    for name in ("BraTS2021_00006_t1.nii.gz", "segue_t1.nii.gz", "unlabelled_t2.nii"):
        assert not is_segmentation(name), name


CONVENTIONS = {
    "brats2021": brats21(),
    "brats2023": {"t1": "BraTS-GLI-00001-000-t1n.nii.gz", "t1ce": "BraTS-GLI-00001-000-t1c.nii.gz",
                  "t2": "BraTS-GLI-00001-000-t2w.nii.gz", "flair": "BraTS-GLI-00001-000-t2f.nii.gz"},
    "site_mixed_formats": {"t1": "MPRAGE.nrrd", "t1ce": "T1Gd.mha", "t2": "T2w.nhdr", "flair": "T2-FLAIR.mhd"},
    "site_post": {"t1": "t1.nii", "t1ce": "T1-post.nii.gz", "t2": "T2.nii.gz", "flair": "T2_FLAIR.nii.gz"},
    "site_plus_c": {"t1": "T1w.nii.gz", "t1ce": "T1+C.nii.gz", "t2": "t2.mha", "flair": "FLAIR.nrrd"},
    "site_contrast": {"t1": "a_T1.nii.gz", "t1ce": "b_T1_contrast.nii.gz", "t2": "c_T2.nii.gz", "flair": "d_flair.nii.gz"},
    # Alphabetical order differs from channel order: position must not matter.
    "unordered": {"t1": "z_t1.nii.gz", "t1ce": "y_t1c.nii.gz", "t2": "x_t2.nii.gz", "flair": "w_flair.nii.gz"},
}


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_load_study_naming_conventions(tmp_path, convention):
    names = CONVENTIONS[convention]
    paths = write_study(tmp_path / convention, names)
    study = load_study(tmp_path / convention)
    assert set(study.images) == set(MODALITIES)
    assert study.paths == paths
    assert_levels(study)
    assert study.reference is study.images["t1ce"]
    assert study.array("t1ce").shape == SIZE[::-1]  # (z, y, x)
    assert study.notes == []


def test_segmentation_is_ignored_and_found(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, brats21())
    seg = folder / "BraTS2021_00001_seg.nii.gz"
    sitk.WriteImage(sitk.Cast(make_volume(0) > 5, sitk.sitkUInt8), str(seg))
    sitk.WriteImage(sitk.Cast(make_volume(0) > 0, sitk.sitkUInt8), str(folder / "brainmask.nii.gz"))
    (folder / "notes.txt").write_text("not an image")
    study = load_study(folder)
    assert set(study.images) == set(MODALITIES)
    assert any("seg" in note and "ignored" in note for note in study.notes)
    assert find_segmentation(folder) == seg
    assert find_segmentation(tmp_path) is None


def test_list_and_mapping_sources_and_log(tmp_path):
    paths = write_study(tmp_path / "c", {"t1": "a.nii.gz", "t1ce": "b_t1ce.nii.gz", "t2": "c_t2.nii.gz",
                                         "flair": "d_flair.nii.gz"})
    # A list is recognised by name too; "a.nii.gz" says nothing, so T1 is missing.
    with pytest.raises(StudyError, match="T1 image"):
        load_study([paths["flair"], paths["t1ce"], paths["t2"], paths["t1"]])
    study = load_study([paths["flair"], paths["t1ce"], paths["t2"]], required=("t1ce", "t2", "flair"))
    assert list(study.images) == ["t1ce", "t2", "flair"]
    # A mapping says explicitly which is which.
    logged = []
    study = load_study({"T1": paths["t1"], "t1ce": paths["t1ce"], "t2": paths["t2"], "flair": paths["flair"]},
                       log=logged.append)
    assert_levels(study)
    # In a folder, the unrecognised file is reported (in notes and through log) when not needed.
    study = load_study(tmp_path / "c", required=("t1ce", "t2", "flair"), log=logged.append)
    assert "t1" not in study.images
    assert any("a.nii.gz" in n and "does not say" in n for n in study.notes)
    assert logged == study.notes
    assert find_study_files(tmp_path / "c", required=("t1ce",)) == {
        m: paths[m] for m in ("t1ce", "t2", "flair")}


def test_paths_with_spaces(tmp_path):
    folder = tmp_path / "my patient" / "scan 2024 01"
    write_study(folder, {"t1": "Patient A T1.nii.gz", "t1ce": "Patient A T1 post.nii.gz",
                         "t2": "Patient A T2.nrrd", "flair": "Patient A FLAIR.mha"})
    study = load_study(str(folder))
    assert_levels(study)
    assert load_image(folder / "Patient A T2.nrrd").GetSize() == SIZE


def test_mismatched_grid_is_resampled_with_note(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "flair"})
    # FLAIR: thick slices, shifted a little, covering the same head.
    flair = make_volume(LEVEL["flair"], size=(8, 9, 4), spacing=(2.0, 2.0, 3.0), origin=(0.5, 0.5, 0.0), seed=9)
    sitk.WriteImage(flair, str(folder / "BraTS2021_00001_flair.nii.gz"))
    study = load_study(folder)
    ref = study.reference
    for image in study.images.values():
        assert image.GetSize() == ref.GetSize()
        assert image.GetSpacing() == ref.GetSpacing()
        assert image.GetOrigin() == ref.GetOrigin()
        assert image.GetDirection() == ref.GetDirection()
    flair_notes = [n for n in study.notes if n.startswith("FLAIR")]
    assert len(flair_notes) == 1 and "resampled onto the T1ce grid" in flair_notes[0]
    assert "spacing" in flair_notes[0]
    centre = study.array("flair")[4:8, 6:12, 5:11]
    assert abs(float(np.median(centre)) - LEVEL["flair"]) < 80


def test_tiny_geometry_differences_are_snapped_without_note(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    sitk.WriteImage(make_volume(LEVEL["t2"], origin=(1e-5, -2e-5, 0.0)), str(folder / "x_t2.nii.gz"))
    study = load_study(folder)
    assert study.images["t2"].GetOrigin() == study.reference.GetOrigin()
    assert study.notes == []


def test_single_volume_4d_is_accepted(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    # NIfTI readers drop a trailing 1 themselves; MetaImage keeps the 4th axis.
    sitk.WriteImage(sitk.JoinSeries([make_volume(LEVEL["t2"])]), str(folder / "x_t2.mha"))
    study = load_study(folder)
    assert study.images["t2"].GetDimension() == 3
    assert any("4D" in n for n in study.notes)


# ---------------------------------------------------------------------------------------------
# Bad input: every case is refused with one sentence that names the problem, and nothing is written


def test_missing_modality(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    sitk.WriteImage(make_volume(300), str(folder / "scan3.nii.gz"))
    message = assert_refused(folder, tmp_path, "no T2 image", "found", "T1ce", "FLAIR", "scan3.nii.gz", "rename")
    assert "BraTS2021_00001_flair.nii.gz" in message
    # Two missing: both named.
    (folder / "BraTS2021_00001_t1.nii.gz").unlink()
    assert_refused(folder, tmp_path, "no T1 or T2 image")


def test_duplicate_modality(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, brats21())
    sitk.WriteImage(make_volume(400), str(folder / "T2_FLAIR.nii.gz"))
    assert_refused(folder, tmp_path, "claim to be the FLAIR", "BraTS2021_00001_flair.nii.gz", "T2_FLAIR.nii.gz")


def test_empty_folder_and_folder_of_cases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    assert_refused(empty, tmp_path, "No MRI images", str(empty))
    cohort = tmp_path / "cohort"
    write_study(cohort / "case1", brats21("case1"))
    assert_refused(cohort, tmp_path, "No MRI images", "case1")
    assert_refused(tmp_path / "does not exist", tmp_path, "does not exist")


def test_two_dimensional_image(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    sitk.WriteImage(make_volume(300)[:, :, 5], str(folder / "x_t2.nii.gz"))
    assert_refused(folder, tmp_path, "x_t2.nii.gz", "2D", "3D volume")


def test_single_slice_volume(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    sitk.WriteImage(make_volume(300, size=(16, 18, 1)), str(folder / "x_t2.nrrd"))
    assert_refused(folder, tmp_path, "x_t2.nrrd", "single slice")


def test_four_dimensional_image(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    sitk.WriteImage(sitk.JoinSeries([make_volume(300), make_volume(310)]), str(folder / "x_t2.nii.gz"))
    assert_refused(folder, tmp_path, "x_t2.nii.gz", "4D", "2 volumes")


def test_multichannel_image(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    rgb = sitk.Compose([make_volume(300), make_volume(300), make_volume(300)])
    sitk.WriteImage(rgb, str(folder / "x_t2.mha"))
    assert_refused(folder, tmp_path, "x_t2.mha", "values per voxel")


@pytest.mark.parametrize("damage", ["random_bytes", "empty_file", "truncated_gz", "truncated_nii",
                                    "corrupted_gz", "truncated_nrrd"])
def test_corrupt_file(tmp_path, damage):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    good = tmp_path / "good"
    good.mkdir()
    if damage == "random_bytes":
        path = folder / "x_t2.nii.gz"
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif damage == "empty_file":
        path = folder / "x_t2.nii.gz"
        path.write_bytes(b"")
    elif damage in ("truncated_gz", "corrupted_gz"):
        path = folder / "x_t2.nii.gz"
        sitk.WriteImage(make_volume(300, size=(40, 40, 30)), str(good / path.name))
        data = bytearray((good / path.name).read_bytes())
        if damage == "truncated_gz":
            data = data[: len(data) // 2]
        else:
            middle = len(data) // 2
            data[middle : middle + 200] = bytes(b ^ 0x5A for b in data[middle : middle + 200])
        path.write_bytes(bytes(data))
    elif damage == "truncated_nii":
        path = folder / "x_t2.nii"
        sitk.WriteImage(make_volume(300), str(good / path.name))
        data = (good / path.name).read_bytes()
        path.write_bytes(data[: len(data) - 1000])
    else:
        path = folder / "x_t2.nrrd"
        sitk.WriteImage(make_volume(300), str(good / path.name), useCompression=False)
        data = (good / path.name).read_bytes()
        path.write_bytes(data[: len(data) - 1000])
    message = assert_refused(folder, tmp_path, str(path))
    assert any(w in message for w in ("damaged", "truncated", "empty")), message
    with pytest.raises(StudyError, match="x_t2"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("bad_value, words", [(np.nan, ("not numbers", "NaN")), (np.inf, ("infinity",))])
def test_non_finite_values(tmp_path, bad_value, words, suffix):
    # SimpleITK's NIfTI reader turns NaN/inf into 0, so NIfTI is checked on the raw file.
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "flair"})
    arr = sitk.GetArrayFromImage(make_volume(400))
    arr[3, 4, 5:8] = bad_value
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(folder / f"x_flair{suffix}"))
    assert_refused(folder, tmp_path, f"x_flair{suffix}", "3 voxels", *words)


@pytest.mark.parametrize("value, words", [(0.0, ("every voxel is zero",)), (7.0, ("same value", "7"))])
def test_blank_image(tmp_path, value, words):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t1"})
    blank = sitk.Image(list(SIZE), sitk.sitkInt16) + int(value)
    sitk.WriteImage(blank, str(folder / "x_t1.nii.gz"))
    assert_refused(folder, tmp_path, "x_t1.nii.gz", "holds no image", *words)


def test_non_overlapping_anatomy_is_refused(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    far = make_volume(300, origin=(14.0, 0.0, 0.0))  # overlaps the T1ce by 2 of 16 voxels in x
    sitk.WriteImage(far, str(folder / "x_t2.nii.gz"))
    assert_refused(folder, tmp_path, "x_t2.nii.gz", "T1ce", "different regions", "register")
    sitk.WriteImage(make_volume(300, origin=(500.0, 0.0, 0.0)), str(folder / "x_t2.nii.gz"))
    assert_refused(folder, tmp_path, "(none of the smaller", "different regions")


def test_problem_in_unrequired_modality_is_a_note(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    (folder / "x_t2.nii.gz").write_bytes(b"not an image at all")
    study = load_study(folder, required=("t1ce", "flair"))
    assert "t2" not in study.images and set(study.images) == {"t1", "t1ce", "flair"}
    assert any(n.startswith("T2 was not loaded") for n in study.notes)


def test_no_t1ce_uses_first_modality_as_reference(tmp_path):
    write_study(tmp_path / "c", {"t1": "a_t1.nii.gz", "flair": "a_flair.nii.gz"})
    study = load_study(tmp_path / "c", required=("t1", "flair"))
    assert study.reference_modality == "t1" and study.reference is study.images["t1"]
    assert any("no T1ce" in n for n in study.notes)


# ---------------------------------------------------------------------------------------------
# DICOM


def write_dicom_series(folder: Path, image: sitk.Image, description: str, series_uid: str, extra=None):
    """Write a 3D image as an MR DICOM series, one file per slice (SimpleITK's documented recipe);
    ``extra`` tags are added or replace the defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 2000), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    orientation = "\\".join(str(v) for v in (direction[0], direction[3], direction[6],
                                              direction[1], direction[4], direction[7]))
    stamp = time.strftime("%Y%m%d")
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0008|0020": stamp,
            "0008|0060": "MR",
            "0008|103e": description,
            "0010|0010": "Test^Patient",
            "0010|0020": "GS0001",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
            "0020|000e": series_uid,
            "0020|0011": series_uid.rsplit(".", 1)[-1],
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": orientation,
            "0018|0050": str(image.GetSpacing()[2]),
            **(extra or {}),
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k + 1:04d}.dcm"))
        writer.Execute(slice_)


def test_a_t1_described_alike_before_and_after_contrast_is_told_apart_by_its_contrast_agent(tmp_path):
    """A PACS export: numbered series folders, both T1 series described "AX T1 SE"; ContrastBolusAgent
    (0018,0010) says which one had gadolinium, and "NONE" is no agent."""
    study_dir = tmp_path / "export"
    series = {"t1": ("AX T1 SE", "NONE"), "t1ce": ("AX T1 SE", "Gadobutrol 1.0 mmol/ml"), "t2": ("AX T2 FSE", None),
              "flair": ("AX T2 FLAIR", None)}
    for i, (modality, (description, agent)) in enumerate(series.items()):
        write_dicom_series(study_dir / f"{i + 1:03d}", make_volume(LEVEL[modality], seed=i), description,
                           f"1.2.826.0.1.3680043.2.1125.3.{i + 1}", extra={"0018|0010": agent} if agent else None)
    study = load_study(study_dir)
    assert study.paths == {m: study_dir / f"{i + 1:03d}" for i, m in enumerate(MODALITIES)}
    assert any("ContrastBolusAgent 'Gadobutrol 1.0 mmol/ml'" in n for n in study.notes)


def test_series_of_two_patients_in_one_folder_are_listed_and_one_must_be_chosen(tmp_path):
    study_dir = tmp_path / "mixed"
    for i, modality in enumerate(MODALITIES):
        patient = "GS0001" if i < 2 else "GS0002"
        write_dicom_series(study_dir / f"s{i}", make_volume(LEVEL[modality], seed=i), display_name(modality),
                           f"1.2.826.0.1.3680043.2.1125.4.{i + 1}",
                           extra={"0010|0020": patient, "0020|000d": f"1.2.826.0.1.3680043.2.1125.5.{patient[-1]}"})
    before = snapshot(tmp_path)
    with pytest.raises(StudyError) as raised:
        load_study(study_dir)
    message = str(raised.value)
    assert "2 patients" in message and "GS0001" in message and "GS0002" in message and "choose one study" in message
    assert snapshot(tmp_path) == before


def test_dicom_series_folders(tmp_path):
    study_dir = tmp_path / "dicom study"
    geometry = dict(spacing=(0.9, 0.9, 2.0), origin=(-7.0, -8.0, 3.0))
    # Folder names say T1 and T1ce; the T2 and FLAIR folders are numbered, so their
    # SeriesDescription must be read. The FLAIR sits two levels down (PACS-style export).
    series = {
        "t1": (study_dir / "T1_MPRAGE", "sag mprage"),
        "t1ce": (study_dir / "T1 post", "whatever"),
        "t2": (study_dir / "series 3", "AX T2 FSE"),
        "flair": (study_dir / "exam" / "series 4", "Ax T2 FLAIR"),
    }
    for i, (modality, (folder, description)) in enumerate(series.items()):
        write_dicom_series(folder, make_volume(LEVEL[modality], seed=i, **geometry), description,
                           f"1.2.826.0.1.3680043.2.1125.2.{i + 1}")
    before = snapshot(tmp_path)
    study = load_study(study_dir)
    assert snapshot(tmp_path) == before
    assert set(study.images) == set(MODALITIES)
    for modality, (folder, _) in series.items():
        assert study.paths[modality] == folder
    ref = study.reference
    assert ref.GetSize() == SIZE
    assert np.allclose(ref.GetSpacing(), geometry["spacing"], atol=1e-3)
    assert np.allclose(ref.GetOrigin(), geometry["origin"], atol=1e-3)
    # Rescaled to 0..2000 on write, so compare structure, not levels: the blob is brighter.
    for modality in MODALITIES:
        arr = study.array(modality)
        assert arr[6, 9, 8] > np.median(arr)
    assert any("SeriesDescription 'AX T2 FSE'" in n for n in study.notes)
    # A DICOM series folder works in a list and in load_image.
    image = load_image(series["t2"][0])
    assert image.GetSize() == SIZE and image.GetPixelID() == sitk.sitkFloat32
    study = load_study([series["t1ce"][0], series["flair"][0]], required=("t1ce", "flair"))
    assert list(study.images) == ["t1ce", "flair"]


def test_dicom_series_sharing_one_folder(tmp_path):
    flat = tmp_path / "flat"
    descriptions = {"t1": "AX T1 SE", "t1ce": "AX T1 SE +C", "t2": "AX T2", "flair": "AX FLAIR"}
    for i, (modality, description) in enumerate(descriptions.items()):
        write_dicom_series(tmp_path / "tmp" / modality, make_volume(LEVEL[modality], seed=i), description,
                           f"1.2.826.0.1.3680043.2.1125.3.{i + 1}")
    flat.mkdir()
    for modality in descriptions:
        for f in (tmp_path / "tmp" / modality).iterdir():
            f.rename(flat / f"{modality}_{f.name}")
    study = load_study(flat)
    assert set(study.images) == set(MODALITIES)
    with pytest.raises(StudyError, match="4 DICOM series"):
        load_image(flat)


def test_dicom_series_with_unreadable_description(tmp_path):
    folder = tmp_path / "case"
    write_study(folder, {m: n for m, n in brats21().items() if m != "t2"})
    write_dicom_series(folder / "series 7", make_volume(300), "DWI b1000", "1.2.826.0.1.3680043.2.1125.4.1")
    message = assert_refused(folder, tmp_path, "no T2 image", "series 7")
    assert "names not recognised" in message and "DWI b1000" in message


# ---------------------------------------------------------------------------------------------
# Real data


def test_real_studies_are_recognised():
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root:
        pytest.skip("GLIOMASUITE_DATA is not set (point it at ../shared/data to test on real BraTS studies)")
    folders = []
    for collection in ("brats", "brats-unlabelled"):
        base = Path(root) / collection
        if not base.is_dir():
            pytest.skip(f"{base} is missing")
        folders += sorted(p for p in base.iterdir() if p.is_dir())
    assert folders
    failures = []
    for folder in folders:
        try:
            study = load_study(folder)
        except StudyError as exc:  # pragma: no cover - only on a broken data set
            failures.append(f"{folder.name}: {exc}")
            continue
        if tuple(study.images) != MODALITIES:
            failures.append(f"{folder.name}: found {tuple(study.images)}")
            continue
        # Each modality came from the file named for it (BraTS 2021 or 2023 suffixes).
        suffixes = {"t1": ("_t1", "-t1n"), "t1ce": ("_t1ce", "-t1c"), "t2": ("_t2", "-t2w"),
                    "flair": ("_flair", "-t2f")}
        for modality, path in study.paths.items():
            stem = path.name.lower().replace(".nii.gz", "")
            if not stem.endswith(suffixes[modality]):
                failures.append(f"{folder.name}: {modality} <- {path.name}")
        if study.reference.GetSize() != (240, 240, 155):
            failures.append(f"{folder.name}: reference size {study.reference.GetSize()}")
        if any("resampled" in n for n in study.notes):
            failures.append(f"{folder.name}: unexpected resampling {study.notes}")
        seg = find_segmentation(folder)
        if folder.parent.name == "brats" and (seg is None or "seg" not in seg.name):
            failures.append(f"{folder.name}: segmentation not found")
    assert not failures, "\n".join(failures)


def test_series_of_one_study_in_two_frames_of_reference_are_refused_unless_registered(tmp_path):
    """One patient and study, but the T2 and FLAIR were acquired after the patient left the scanner (another
    FrameOfReferenceUID): their voxels are not in the T1ce's coordinates. Refused, naming both and the fix;
    with the sequences registered (``--coregister``) loaded, with a note."""
    study_dir = tmp_path / "two sessions"
    for i, modality in enumerate(MODALITIES):
        frame = "1.2.826.0.1.3680043.2.1125.6.1" if i < 2 else "1.2.826.0.1.3680043.2.1125.6.2"
        write_dicom_series(study_dir / f"s{i}", make_volume(LEVEL[modality], seed=i), display_name(modality),
                           f"1.2.826.0.1.3680043.2.1125.7.{i + 1}", extra={"0020|0052": frame})
    before = snapshot(tmp_path)
    with pytest.raises(StudyError) as raised:
        load_study(study_dir)
    message = str(raised.value)
    assert "T2 (s2" in message and "FLAIR (s3" in message and "another frame of reference than the T1ce (s1" in message
    assert "--coregister" in message and len(message) < 300
    assert snapshot(tmp_path) == before
    from gliomasuite import cli  # the command refuses it before any work, with exit status 2

    assert cli.main(["segment", str(study_dir), "-o", str(tmp_path / "seg.nii.gz")]) == 2
    assert snapshot(tmp_path) == before
    study = load_study(study_dir, other_frames_ok=True)
    assert sorted(study.images) == sorted(MODALITIES)
    assert any("another frame of reference" in n and "registered to the T1ce" in n for n in study.notes)
    # Series sharing one frame of reference (every other DICOM test here) load without a word about it.
    for i in range(2, 4):
        for path in (study_dir / f"s{i}").iterdir():
            path.unlink()
        (study_dir / f"s{i}").rmdir()
    assert not any("frame of reference" in n for n in load_study(study_dir, required=("t1", "t1ce")).notes)
