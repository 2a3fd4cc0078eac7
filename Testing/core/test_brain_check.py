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
from gliomasuite.brain_check import BRAIN_CM3, BRAIN_FILL, input_problems
from gliomasuite.segmentation.inference import segment_study
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
    study = load_study(folder)
    assert_not_segmented(segment_study(study, device="cpu"), study, "T1ce and FLAIR are the same image")


@pytest.mark.skipif(not DATA, reason="GLIOMASUITE_DATA is not set (real BraTS cases needed)")
def test_every_real_brain_passes_the_brain_check():
    """All labelled BraTS brains and the unlabelled real case (BraTS 2023 naming) pass; their numbers
    are the ones inference.py cites next to the thresholds."""
    from gliomasuite.segmentation.cache import find_cases

    cases = find_cases(Path(DATA) / "brats") + [Path(DATA) / "brats-unlabelled" / "BraTS-GLI-00001-000"]
    assert len(cases) >= 26
    failed, volumes, fills = {}, [], []
    for case in cases:
        study = load_study(case)
        prepared = prepare(study.images)
        volumes.append(prepared.brain.sum() / 1000.0)
        fills.append(prepared.brain.mean())
        problems = input_problems(prepared, study.images)
        if problems:
            failed[case.name] = problems
    assert not failed, failed
    # Comfortably inside, not at the edge of, the accepted ranges.
    assert BRAIN_CM3[0] + 300 < min(volumes) and max(volumes) < BRAIN_CM3[1] - 500
    assert BRAIN_FILL[0] + 0.05 < min(fills) and max(fills) < BRAIN_FILL[1] - 0.1
