"""The built-in synthetic demo study: determinism, BraTS geometry, label structure, MR contrast.

These are the properties a user (and every other test that runs on the demo case) relies on: the
files look like a BraTS study, the truth is a sensible glioma, and each contrast orders the tissues
the way real T1 / T1ce / T2 / FLAIR do.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from gliomasuite import demo
from gliomasuite.labels import ED, ET, NCR

MODALITIES = ("t1", "t1ce", "t2", "flair")
CUBE = ndi.generate_binary_structure(3, 3)


@lru_cache(maxsize=2)  # ~200 MB each; tests are ordered so each seed is computed about once
def arrays(seed):
    """(images, seg, tissues) for a seed."""
    return demo.synthesize_demo_arrays(seed, return_tissues=True)


ELAPSED = {}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    assert demo.make_demo_study(out, seed=0) == out
    ELAPSED["make_demo_study"] = time.perf_counter() - t0
    return out


def read(path):
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


def test_writes_the_five_brats_named_files(study_dir):
    names = sorted(p.name for p in study_dir.iterdir())
    assert names == sorted(f"GliomaDemo_{k}.nii.gz" for k in MODALITIES + ("seg",))
    assert set(demo.demo_paths(study_dir)) == set(MODALITIES + ("seg",))


def test_geometry_is_brats_like(study_dir):
    for key, path in demo.demo_paths(study_dir).items():
        img, arr = read(path)
        assert img.GetDimension() == 3
        assert img.GetSize() == (240, 240, 155)
        assert img.GetSpacing() == (1.0, 1.0, 1.0)
        assert img.GetOrigin() == (0.0, -239.0, 0.0)
        assert img.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        expected = sitk.sitkUInt8 if key == "seg" else sitk.sitkInt16
        assert img.GetPixelID() == expected, key


@pytest.mark.realdata
def test_geometry_matches_a_real_brats_file(study_dir):
    root = Path(os.environ.get("GLIOMASUITE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    real = sorted((root / "brats").glob("BraTS2021_*/*_t1.nii.gz"))
    if not real:
        pytest.skip("no BraTS 2021 case under GLIOMASUITE_DATA")
    r = sitk.ReadImage(str(real[0]))
    d = sitk.ReadImage(str(demo.demo_paths(study_dir)["t1"]))
    assert (d.GetSize(), d.GetSpacing(), d.GetOrigin(), d.GetDirection()) == (
        r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection())
    assert d.GetPixelID() == r.GetPixelID()


def test_same_seed_gives_identical_arrays(study_dir):
    # the files of one run and the arrays of another, separate run with the same seed
    images, seg, _ = arrays(0)
    for key in MODALITIES:
        np.testing.assert_array_equal(read(demo.demo_paths(study_dir)[key])[1], images[key])
    np.testing.assert_array_equal(read(demo.demo_paths(study_dir)["seg"])[1], seg)


def test_different_seed_gives_a_different_study():
    images0, seg0, _ = arrays(0)
    images1, seg1, _ = arrays(1)
    assert not np.array_equal(seg0, seg1)
    for key in MODALITIES:
        assert not np.array_equal(images0[key], images1[key])


@pytest.mark.parametrize("seed", [0, 1])
def test_intensities_are_brain_only_and_sane(seed):
    images, seg, _ = arrays(seed)
    support = images["t1"] > 0
    for key in MODALITIES:
        a = images[key]
        assert a.dtype == np.int16 and a.ndim == 3
        assert a.min() >= 0
        # skull-stripped: every contrast is non-zero on exactly the same brain, zero elsewhere
        np.testing.assert_array_equal(a > 0, support, err_msg=key)
        assert 200 < np.median(a[support]) < 5000, key
    assert 1.0e6 < support.sum() < 1.9e6  # a brain: about 1.0-1.9 litres
    assert np.all(seg[~support] == 0)
    border = np.ones(support.shape, bool)
    border[:, 10:-10, 10:-10] = False
    assert not support[border].any()
    lab, n = ndi.label(support)
    assert n >= 1 and (lab == np.argmax(np.bincount(lab.ravel())[1:]) + 1).sum() > 0.99 * support.sum()


def _means(images, seg, tissues, far_from_tumour):
    pure = {t: (tissues[t] > 0.9) & far_from_tumour for t in ("gm", "wm", "csf")}
    regions = dict(pure, ncr=seg == NCR, ed=seg == ED, et=seg == ET)
    return {m: {r: float(images[m][mask].mean()) for r, mask in regions.items()} for m in MODALITIES}


@pytest.mark.parametrize("seed", [0, 1])
def test_each_contrast_orders_tissues_like_real_mri(seed):
    images, seg, tissues = arrays(seed)
    far = ~ndi.binary_dilation(seg > 0, iterations=5) & (images["t1"] > 0)
    for t in ("gm", "wm", "csf"):
        assert ((tissues[t] > 0.9) & far).sum() > 2000, t
    mean = _means(images, seg, tissues, far)
    t1, t1ce, t2, flair = (mean[m] for m in MODALITIES)
    # T1: white matter brightest, CSF darkest; edema and necrosis darker than white matter
    assert t1["wm"] > 1.15 * t1["gm"] > 1.15 * 1.5 * t1["csf"]
    assert t1["ed"] < t1["wm"] and t1["ncr"] < t1["gm"]
    # T1ce: like T1 in normal tissue, enhancing rim far brighter than necrosis and white matter
    assert t1ce["wm"] > t1ce["gm"] > t1ce["csf"]
    assert t1ce["et"] > 2.0 * t1ce["ncr"]
    assert t1ce["et"] > 1.4 * t1ce["wm"]
    # T2: CSF brightest, grey above white matter, edema and necrosis bright
    assert t2["csf"] > 1.5 * t2["gm"] and t2["gm"] > t2["wm"]
    assert t2["ed"] > 1.35 * t2["wm"] and t2["ncr"] > t2["ed"]
    # FLAIR: CSF suppressed (darkest), edema clearly brighter than normal white and grey matter
    assert flair["csf"] < 0.5 * flair["wm"]
    assert flair["ed"] > 1.35 * flair["wm"] and flair["ed"] > 1.25 * flair["gm"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_form_a_nested_glioma(seed):
    _, seg, tissues = arrays(seed)
    assert seg.dtype == np.uint8
    assert set(np.unique(seg)) == {0, NCR, ED, ET}
    ncr, ed, et = seg == NCR, seg == ED, seg == ET
    core = ncr | et
    whole = core | ed
    # one tumour, with a plausible size (core 5-60 ml, whole tumour 15-250 ml at 1 mm^3 voxels)
    assert ndi.label(whole, CUBE)[1] == 1
    assert 5e3 < core.sum() < 6e4 and 1.5e4 < whole.sum() < 2.5e5
    # the enhancing rim touches and encloses the necrotic core: NCR never borders edema or brain
    grown_ncr = ndi.binary_dilation(ncr, CUBE)
    assert (grown_ncr & et).any()
    assert not (grown_ncr & ~core).any()
    # edema surrounds the core: almost all of the core's outer shell inside brain tissue is edema
    shell = ndi.binary_dilation(core, CUBE) & ~core & (tissues["csf"] < 0.5) & (
        tissues["gm"] + tissues["wm"] > 0.5)
    assert ed[shell].mean() > 0.9
    # in one hemisphere: the core does not cross the brain's mid-sagittal plane
    brain_x = np.nonzero(tissues["gm"] + tissues["wm"] > 0.5)[2]
    mid = 0.5 * (brain_x.min() + brain_x.max())
    core_x = np.nonzero(core)[2]
    assert core_x.max() < mid or core_x.min() > mid
    # edema follows white matter rather than grey matter
    assert tissues["wm"][ed].mean() > tissues["gm"][ed].mean()


def test_demo_is_fast_enough(study_dir):
    # about 3 s on 2 CPU cores; the bound leaves room for a busy CI machine
    assert ELAPSED["make_demo_study"] < 30.0
