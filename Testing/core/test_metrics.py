"""Tests for gliomasuite.metrics: hand-computed cases, library cross-checks and agreement with the
official BraTS evaluation package (``brats-evaluation``, which scores through ``panoptica``)."""

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from gliomasuite import metrics
from gliomasuite.errors import GliomaSuiteError

TIGHT = 1e-9

pytestmark = [
    # panoptica warns about its NSD default on every run; NSD is not used here.
    pytest.mark.filterwarnings("ignore:The threshold is set to 0.5:UserWarning"),
    # MONAI 1.5+ deprecation inside its own get_mask_edges.
    pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning"),
]


# ---------------------------------------------------------------------------------------------
# helpers


def ellipsoid(shape, centre, radii_mm, spacing):
    """Boolean ellipsoid on a grid with the given spacing (radii in mm)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - c) * s / r) ** 2 for g, c, r, s in zip(grids, centre, radii_mm, spacing))
    return r2 <= 1.0


def brats_case(shape, spacing, offset=(0, 0, 0), scale=1.0):
    """Nested WT ⊃ TC ⊃ ET ellipsoids as a BraTS label map (2 edema, 1 necrosis, 4 enhancing)."""
    c = np.array(shape) / 2 + np.array(offset)
    labels = np.zeros(shape, np.uint8)
    labels[ellipsoid(shape, c, (18 * scale, 14 * scale, 12 * scale), spacing)] = 2
    labels[ellipsoid(shape, c + (1, 0, 0), (10 * scale, 8 * scale, 7 * scale), spacing)] = 4
    labels[ellipsoid(shape, c + (1, 0, 0), (6 * scale, 5 * scale, 4 * scale), spacing)] = 1
    return labels


def brute_force_hd95(a, b, spacing):
    """HD95 from every pair of border voxels (no distance transform, no cropping)."""
    st = ndimage.generate_binary_structure(a.ndim, 1)
    border_a = np.argwhere(a ^ ndimage.binary_erosion(a, st)) * np.asarray(spacing)
    border_b = np.argwhere(b ^ ndimage.binary_erosion(b, st)) * np.asarray(spacing)
    d = cdist(border_a, border_b)
    return float(np.percentile(np.concatenate((d.min(axis=1), d.min(axis=0))), 95))


# ---------------------------------------------------------------------------------------------
# hand-computed cases


def test_dice_two_cubes_known_overlap():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True  # 64 voxels
    b[2:6, 0:4, 0:4] = True  # 64 voxels, 32 shared
    assert metrics.dice(a, b) == 0.5
    b2 = np.zeros_like(a)
    b2[1:4, 1:4, 0:4] = True  # 36 voxels, all inside a
    assert metrics.dice(a, b2) == 2 * 36 / (64 + 36)
    assert metrics.dice(a, a) == 1.0


def test_hd95_two_points_anisotropic_spacing():
    spacing = (0.5, 1.0, 2.5)
    a = np.zeros((8, 8, 12), bool)
    b = np.zeros_like(a)
    a[2, 3, 4] = True
    b[5, 3, 8] = True  # 3 voxels along axis 0, 4 along axis 2
    expected = math.hypot(3 * 0.5, 4 * 2.5)  # sqrt(1.5² + 10²)
    assert metrics.hd95(a, b, spacing) == pytest.approx(expected, abs=TIGHT)
    # The spacing follows the array axes: swapping the spacing of the axes changes the answer.
    assert metrics.hd95(a, b, (2.5, 1.0, 0.5)) == pytest.approx(math.hypot(7.5, 2.0), abs=TIGHT)


def test_hd95_two_slabs_exact():
    # Two 1-voxel-thick slabs 5 voxels apart along an axis with 2 mm spacing: every border voxel
    # is 10 mm from the other slab.
    a = np.zeros((12, 6, 6), bool)
    b = np.zeros_like(a)
    a[2] = True
    b[7] = True
    assert metrics.hd95(a, b, (2.0, 0.7, 0.7)) == pytest.approx(10.0, abs=TIGHT)


def test_hd95_matches_brute_force_including_image_edge():
    spacing = (0.9, 1.3, 2.2)
    shape = (30, 26, 18)
    a = ellipsoid(shape, (14, 12, 8), (9, 10, 11), spacing)
    b = ellipsoid(shape, (17, 11, 9), (8, 12, 9), spacing)
    a[:, :3, :] = True  # touches the edge of the image: edge voxels count as border
    assert metrics.hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), abs=TIGHT)


def test_hausdorff_max_matches_monai_with_spacing():
    """The border extraction and spacing agree with MONAI: the maxima (HD100) coincide.

    (MONAI's percentile=95 is the larger of the two directed percentiles, not the pooled one BraTS
    uses, so only the maximum is compared.)
    """
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    spacing = (0.9, 1.3, 2.2)
    shape = (30, 26, 18)
    a = ellipsoid(shape, (14, 12, 8), (9, 10, 11), spacing)
    b = ellipsoid(shape, (17, 11, 10), (8, 12, 9), spacing)
    a_to_b, b_to_a = metrics.surface_distances(a, b, spacing)
    ours = max(a_to_b.max(), b_to_a.max())
    theirs = monai_metrics.compute_hausdorff_distance(
        torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None]), spacing=spacing
    )
    assert ours == pytest.approx(float(theirs), abs=1e-5)


def test_volumes_sensitivity_specificity():
    spacing = (1.0, 0.5, 2.0)  # 1 mm³ voxels
    truth = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[0:4, 0:4, 0:4] = 2  # 64 voxels
    pred[2:6, 0:4, 0:4] = 2  # 64 voxels, 32 shared
    pred[9, 9, 9] = 2  # one false positive far away
    wt = metrics.evaluate_labels(pred, truth, spacing)["WT"]
    assert wt["volume_true_mm3"] == 64.0
    assert wt["volume_pred_mm3"] == 65.0
    assert wt["volume_error_mm3"] == 1.0
    assert wt["volume_pred_cm3"] == 0.065
    assert wt["sensitivity"] == 32 / 64
    assert wt["specificity"] == (1000 - 64 - 33) / (1000 - 64)
    assert wt["dice"] == 2 * 32 / (64 + 65)
    assert set(wt) == set(metrics.METRIC_KEYS)


# ---------------------------------------------------------------------------------------------
# empty-region conventions


def test_empty_region_conventions():
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[1:3, 1:3, 1:3] = True
    far = empty.copy()
    far[5, 5, 5] = True
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.hd95(empty, empty) == 0.0
    assert metrics.dice(some, empty) == 0.0 and metrics.dice(empty, some) == 0.0
    assert metrics.hd95(some, empty) == metrics.HD95_EMPTY_MM == 373.0
    assert metrics.hd95(empty, some) == 373.0
    # Disjoint but both present: the real distance, or the official penalty when asked for.
    assert metrics.dice(some, far) == 0.0
    assert 0 < metrics.hd95(some, far) < 373.0
    assert metrics.hd95(some, far, penalise_no_overlap=True) == 373.0

    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1:4, 1:4, 1:4] = 2  # edema only: TC and ET empty in the truth
    pred = truth.copy()
    pred[2, 2, 2] = 4  # the prediction adds one enhancing voxel
    res = metrics.evaluate_labels(pred, truth)
    assert res["ET"]["dice"] == 0.0 and res["ET"]["hd95"] == 373.0
    assert math.isnan(res["ET"]["sensitivity"])
    res = metrics.evaluate_labels(truth, truth)
    assert res["ET"]["dice"] == 1.0 and res["ET"]["hd95"] == 0.0
    assert res["WT"]["dice"] == 1.0 and res["WT"]["hd95"] == 0.0


def test_input_errors():
    with pytest.raises(GliomaSuiteError):
        metrics.evaluate_labels(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(GliomaSuiteError):
        metrics.hd95(np.ones((4, 4, 4)), np.ones((4, 4, 4)), spacing=(1.0, 1.0))


def test_summarize():
    shape, spacing = (40, 40, 32), (1.0, 1.0, 1.0)
    truth = brats_case(shape, spacing)
    cases = {
        "a": metrics.evaluate_labels(truth, truth, spacing),
        "b": metrics.evaluate_labels(brats_case(shape, spacing, offset=(1, 0, 0)), truth, spacing),
        "c": metrics.evaluate_labels(np.zeros_like(truth), truth, spacing),
    }
    s = metrics.summarize(cases)
    assert set(s) == {"WT", "TC", "ET"}
    dices = [cases[k]["WT"]["dice"] for k in "abc"]
    assert s["WT"]["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert s["WT"]["dice"]["median"] == pytest.approx(np.median(dices))
    assert s["WT"]["dice"]["std"] == pytest.approx(np.std(dices, ddof=1))
    assert s["WT"]["dice"]["n"] == 3
    assert s["WT"]["hd95"]["max"] == 373.0
    # A list of cases works too, and NaNs are left out of the statistics.
    empty_truth = metrics.evaluate_labels(truth, np.zeros_like(truth), spacing)
    s2 = metrics.summarize([cases["a"], empty_truth])
    assert s2["ET"]["sensitivity"]["n"] == 1
    assert s2["ET"]["sensitivity"]["mean"] == 1.0


# ---------------------------------------------------------------------------------------------
# agreement with the official BraTS evaluation (brats-evaluation / panoptica)


@pytest.fixture(scope="module")
def official():
    """The official glioma evaluator, relabelled for BraTS 2021 label values.

    The bundled "gli" config targets BraTS 2024+ labels (ET = 3, resection cavity = 4); only its
    label groups are rewritten (ET = {4}, TC = {1, 4}, WT = {1, 2, 4}); the metrics, edge-case
    handling and matching stay as shipped.
    """
    brats_evaluation = pytest.importorskip("brats_evaluation")
    panoptica = pytest.importorskip("panoptica")
    text = Path(brats_evaluation.config_path("gli")).read_text()
    groups = (
        "segmentation_class_groups: !SegmentationClassGroups\n"
        "  groups:\n"
        "    et: !LabelGroup\n      single_instance: false\n      value_labels: [4]\n"
        "    tc: !LabelMergeGroup\n      single_instance: false\n      value_labels: [1, 4]\n"
        "    wt: !LabelMergeGroup\n      single_instance: false\n      value_labels: [1, 2, 4]\n"
    )
    text, n = re.subn(r"segmentation_class_groups:.*?(?=^\S)", groups, text, flags=re.S | re.M)
    assert n == 1, "the bundled config changed layout"
    return brats_evaluation, panoptica.Panoptica_Evaluator, text


def _official_evaluator(official, tmp_path):
    _, evaluator_cls, config = official
    cfg = tmp_path / "config_gli_brats2021.yaml"
    cfg.write_text(config)
    return evaluator_cls.load_from_config(str(cfg))


def _official_scores(official, tmp_path, pred, truth, affine, header=None):
    """Run the official pipeline on NIfTI files: evaluate_single_exam, then parse_seg_results."""
    import nibabel as nib

    brats_evaluation = official[0]
    evaluator = _official_evaluator(official, tmp_path)
    pred_file, truth_file = tmp_path / "pred.nii.gz", tmp_path / "truth.nii.gz"
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine, header), pred_file)
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), affine, header), truth_file)
    result = brats_evaluation.evaluate_single_exam(str(pred_file), str(truth_file), "case", evaluator)
    assert "error" not in result, result.get("error")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"metrics": [result], "missings": []}))
    csv = tmp_path / "parsed.csv"
    brats_evaluation.parse_seg_results(str(summary), str(csv))
    import pandas as pd

    row = pd.read_csv(csv).iloc[0]
    return {
        region: {
            "dice": float(row[f"global_dsc_{region.lower()}"]),
            "hd95": float(row[f"global_hd95_{region.lower()}"]),
            "lesion_hd95": result[region.lower()].get("sq_hd95"),
            "n_pred": result[region.lower()]["global_bin_volume_pred"],
            "n_true": result[region.lower()]["global_bin_volume_ref"],
        }
        for region in ("WT", "TC", "ET")
    }


def test_agrees_with_official_synthetic(official, tmp_path):
    shape, spacing = (64, 60, 48), (1.0, 1.0, 1.0)  # BraTS grids are 1 mm isotropic
    truth = brats_case(shape, spacing)
    pred = brats_case(shape, spacing, offset=(2, -1, 1), scale=0.9)
    rng = np.random.default_rng(7)
    pred[rng.random(shape) < 0.002] = 0  # a few holes: irregular borders
    ref = _official_scores(official, tmp_path, pred, truth, np.eye(4))
    ours = metrics.evaluate_labels(pred, truth, spacing)
    for region in ("WT", "TC", "ET"):
        assert ours[region]["dice"] == pytest.approx(ref[region]["dice"], abs=TIGHT)
        assert ours[region]["hd95"] == pytest.approx(ref[region]["hd95"], abs=TIGHT)
        assert ours[region]["volume_pred_mm3"] == ref[region]["n_pred"]
        assert ours[region]["volume_true_mm3"] == ref[region]["n_true"]


def test_agrees_with_official_anisotropic_lesionwise(official, tmp_path):
    """Spacing check against the official code. panoptica's *global* HD95 ignores the voxel
    spacing, but its per-lesion HD95 honours it, so one-lesion regions are compared there. The
    arrays and spacing go in directly: given NIfTI paths, panoptica 2.1 reads them with SimpleITK
    and pairs the (z, y, x) array with the (x, y, z) spacing."""
    shape, spacing = (48, 44, 30), (0.9, 1.3, 2.2)
    truth = brats_case(shape, spacing)
    pred = brats_case(shape, spacing, offset=(2, -1, 1), scale=0.9)
    ref = _official_evaluator(official, tmp_path).evaluate(pred, truth, voxelspacing=spacing)
    ours = metrics.evaluate_labels(pred, truth, spacing)
    for region in ("WT", "TC", "ET"):
        res = ref[region.lower()]
        assert res.tp == 1 and res.fp == 0 and res.fn == 0  # one lesion each
        assert ours[region]["dice"] == pytest.approx(res.global_bin_dsc, abs=TIGHT)
        assert ours[region]["hd95"] == pytest.approx(res.sq_hd95, abs=TIGHT)


def test_empty_conventions_against_official(official, tmp_path):
    shape = (24, 24, 24)
    truth = np.zeros(shape, np.uint8)
    truth[6:16, 6:16, 6:16] = 2
    truth[9:12, 9:12, 9:12] = 1  # truth: TC present, no enhancing tumour
    pred = truth.copy()
    pred[9:12, 9:12, 9:12] = 2  # prediction: no TC and no ET at all
    ref = _official_scores(official, tmp_path, pred, truth, np.eye(4))
    ours = metrics.evaluate_labels(pred, truth)
    # TC only in the truth: Dice 0, HD95 373 in both.
    assert ours["TC"]["dice"] == ref["TC"]["dice"] == 0.0
    assert ours["TC"]["hd95"] == ref["TC"]["hd95"] == 373.0
    # ET in neither: ours is Dice 1 / HD95 0 (BraTS <= 2021); brats-evaluation 0.0.10 gives NaN.
    assert ours["ET"]["dice"] == 1.0 and ours["ET"]["hd95"] == 0.0
    assert math.isnan(ref["ET"]["dice"]) or ref["ET"]["dice"] == 1.0
    assert math.isnan(ref["ET"]["hd95"]) or ref["ET"]["hd95"] == 0.0

    # ET and TC only in the prediction: Dice 0, HD95 373 in both.
    truth_no_tc = np.where(truth > 0, 2, 0).astype(np.uint8)
    pred_et = truth_no_tc.copy()
    pred_et[10, 10, 10] = 4
    ref = _official_scores(official, tmp_path, pred_et, truth_no_tc, np.eye(4))
    ours = metrics.evaluate_labels(pred_et, truth_no_tc)
    for region in ("ET", "TC"):
        assert ours[region]["dice"] == ref[region]["dice"] == 0.0
        assert ours[region]["hd95"] == ref[region]["hd95"] == 373.0


def test_disjoint_regions_against_official(official, tmp_path):
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[2:8, 2:8, 2:8] = 2
    pred = np.zeros_like(truth)
    pred[14:20, 14:20, 14:20] = 2
    ref = _official_scores(official, tmp_path, pred, truth, np.eye(4))
    penalised = metrics.evaluate_labels(pred, truth, penalise_no_overlap=True)
    assert penalised["WT"]["hd95"] == ref["WT"]["hd95"] == 373.0
    real = metrics.evaluate_labels(pred, truth)["WT"]["hd95"]
    assert real == pytest.approx(brute_force_hd95(pred > 0, truth > 0, (1, 1, 1)), abs=TIGHT)


@pytest.mark.realdata
def test_agrees_with_official_real_case(official, tmp_path):
    data = os.environ.get("GLIOMASUITE_DATA")
    if not data:
        pytest.skip("GLIOMASUITE_DATA is not set (point it at shared/data to run the real case)")
    path = Path(data) / "brats" / "BraTS2021_01476" / "BraTS2021_01476_seg.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    import nibabel as nib

    img = nib.load(str(path))
    truth = np.asanyarray(img.dataobj).astype(np.uint8)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    # Perturbed copy: shifted by (2, -1, 1) voxels, whole tumour eroded by one voxel, and the
    # enhancing rim dilated into the necrosis.
    pred = np.roll(truth, (2, -1, 1), axis=(0, 1, 2))
    pred[~ndimage.binary_erosion(pred > 0)] = 0
    pred[ndimage.binary_dilation(pred == 4) & (pred == 1)] = 4
    ref = _official_scores(official, tmp_path, pred, truth, img.affine, img.header)
    ours = metrics.evaluate_labels(pred, truth, spacing)
    for region in ("WT", "TC", "ET"):
        assert ours[region]["dice"] == pytest.approx(ref[region]["dice"], abs=TIGHT)
        assert ours[region]["hd95"] == pytest.approx(ref[region]["hd95"], abs=TIGHT)
        assert 0.0 < ours[region]["dice"] < 1.0
