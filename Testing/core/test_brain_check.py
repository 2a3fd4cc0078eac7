"""The brain check: what is not a skull-stripped brain MRI study, with each sequence in its place, is
not segmented (an empty map and a warning that says why), unless the user says to go on.

The V-Net only saw skull-stripped brains; given a head with its skull, a body part, or one volume
chosen for two sequences, it labels tissue at random, and a radiologist may not notice.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite.demo import make_demo_study
from gliomasuite.preprocess import prepare
from gliomasuite.brain_check import (BRAIN_CM3, BRAIN_FILL, SAME_IMAGE_CORRELATION, SKULL_STRIP_HINT, box_fill,
                                     input_problems)
from gliomasuite.segmentation.inference import default_model_for, load_model, segment_study
from gliomasuite.study import load_study

DATA = os.environ.get("GLIOMASUITE_DATA")


def write_tissue_box(folder: Path) -> Path:
    """A 16 cm cube of textured tissue (a body part, or a head with its skull): 4,096 cm3 of foreground."""
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=(160, 160, 160)), 5) > 0.01
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        array = (300 + 100 * i + texture * 150 * (-1) ** i + rng.normal(0, 20, texture.shape)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"case_{m}.nii.gz"))
    return folder


def assert_not_segmented(result, study, *words):
    labels = sitk.GetArrayFromImage(result.labels)
    assert not labels.any() and result.labels.GetSize() == study.reference.GetSize()
    assert result.volumes_cm3["WT"] == 0 and result.engine == ""
    assert result.warnings[-1].startswith("Not segmented") and "--skip-brain-check" in result.warnings[-1]
    said = " ".join(result.brain_check)
    for word in words:
        assert word in said, said


def test_a_box_of_tissue_is_not_segmented_unless_the_user_says_so(tmp_path):
    study = load_study(write_tissue_box(tmp_path))
    refused = segment_study(study, device="cpu", probabilities=True)
    assert_not_segmented(refused, study, "4096 cm3", "fills 100%")
    assert SKULL_STRIP_HINT in refused.warnings[-1]
    assert refused.probabilities is not None and not sitk.GetArrayFromImage(refused.probabilities).any()

    forced = segment_study(study, device="cpu", check_brain=False)
    assert forced.brain_check == [] and forced.engine
    assert any(w.startswith("Segmented although the brain check failed") and "4096 cm3" in w for w in forced.warnings)


def test_a_brain_whose_background_is_not_zero_is_not_segmented(tmp_path):
    """Images that were not skull-stripped keep the scanner's noise around the head: every voxel is
    foreground, so the network would see a box, not a brain."""
    study = load_study(make_demo_study(tmp_path / "demo", seed=0))
    rng = np.random.default_rng(1)
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for m, image in study.images.items():
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array += np.abs(rng.normal(0, 15, array.shape)).astype(np.float32)  # Rayleigh-like background
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(noisy / f"case_{m}.nii.gz"))
    noisy_study = load_study(noisy)
    assert_not_segmented(segment_study(noisy_study, device="cpu"), noisy_study, "fills 100%", "cm3")


def test_one_volume_given_for_two_sequences_is_not_segmented(tmp_path):
    folder = make_demo_study(tmp_path / "demo", seed=0)
    flair = next(folder.glob("*_flair.nii.gz"))
    shutil.copyfile(next(folder.glob("*_t1ce.nii.gz")), flair)  # the T1ce chosen as FLAIR too
    (folder / next(folder.glob("*_t2.nii.gz")).name).unlink()  # and no T2: the reduced model would run
    study = load_study(folder, required=("t1", "t1ce", "flair"))
    model, _ = load_model(default_model_for(study.images))
    result = segment_study(study, model=model, device="cpu")
    assert_not_segmented(result, study, "T1ce and FLAIR look like the same image")
    assert not any("segmented with" in w for w in result.warnings), result.warnings  # nothing ran
    assert SKULL_STRIP_HINT not in result.warnings[-1]  # the fix is choosing volumes, not stripping


def with_flair_replaced(study, array, tmp_path):
    """The study's files with FLAIR's voxels replaced by ``array``."""
    folder = tmp_path / "edited"
    folder.mkdir()
    for m, image in study.images.items():
        out = image
        if m == "flair":
            out = sitk.GetImageFromArray(array)
            out.CopyInformation(image)
        sitk.WriteImage(out, str(folder / f"case_{m}.nii.gz"))
    return load_study(folder)


def test_a_mask_given_as_a_sequence_is_not_segmented(tmp_path):
    study = load_study(make_demo_study(tmp_path / "demo", seed=0))
    mask = (sitk.GetArrayFromImage(study.images["t1ce"]) > 0).astype(np.int16) * 100
    masked = with_flair_replaced(study, mask, tmp_path)
    assert_not_segmented(segment_study(masked, device="cpu"), masked, "FLAIR is blank (one value) inside the brain")


def test_a_few_stray_voxels_do_not_fail_a_real_brain(tmp_path):
    """Two bright voxels in the corners of the FLAIR (an artefact, a marker) stretch the bounding box
    tenfold; the check measures the box without them and still segments."""
    study = load_study(make_demo_study(tmp_path / "demo", seed=0))
    flair = sitk.GetArrayFromImage(study.images["flair"])
    flair[0, 0, 0] = flair[-1, -1, -1] = 1
    stray = with_flair_replaced(study, flair, tmp_path)
    result = segment_study(stray, device="cpu")
    assert result.brain_check == [] and result.volumes_cm3["WT"] > 10


@pytest.mark.skipif(not DATA, reason="GLIOMASUITE_DATA is not set (real BraTS cases needed)")
def test_every_real_brain_passes_the_brain_check():
    """All labelled BraTS brains and the unlabelled real case (BraTS 2023 naming) pass, with room to
    spare (their numbers are the ones brain_check.py cites next to the thresholds)."""
    from gliomasuite.segmentation.cache import find_cases

    cases = find_cases(Path(DATA) / "brats") + [Path(DATA) / "brats-unlabelled" / "BraTS-GLI-00001-000"]
    assert len(cases) >= 26
    failed, volumes, fills, correlations = {}, [], [], []
    for case in cases:
        study = load_study(case)
        prepared = prepare(study.images)
        volumes.append(prepared.brain.sum() / 1000.0)
        fills.append(box_fill(prepared.brain))
        correlation = np.corrcoef(prepared.array[:, prepared.brain])
        correlations.append(correlation[np.triu_indices(4, 1)].max())
        problems = input_problems(prepared, study.images)
        if problems:
            failed[case.name] = problems
    assert not failed, failed
    # Comfortably inside, not at the edge of, the accepted ranges.
    assert BRAIN_CM3[0] + 300 < min(volumes) and max(volumes) < BRAIN_CM3[1] - 500
    assert BRAIN_FILL[0] + 0.2 < min(fills) and max(fills) < BRAIN_FILL[1] - 0.1
    assert max(correlations) < SAME_IMAGE_CORRELATION - 0.1
