"""Tumour-free brains: cohort normalisation statistics (calibration), mirrored negatives, and what a
user is told when a study holds little or no tumour."""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.segmentation.calibration import calibrate
from gliomasuite.segmentation.inference import _pad_to, predict_probabilities
from gliomasuite.segmentation.weights import load_weights, save_weights
from test_segmentation import SMALL, _random_vnet, _run_training  # the same small networks and runner

DATA = os.environ.get("GLIOMASUITE_DATA")
CPU = torch.device("cpu")


def _arrays(n, shape=(4, 30, 26, 34)):
    rng = np.random.default_rng(5)
    return [(rng.normal(size=shape) * rng.uniform(0.5, 2.0) + rng.normal()).astype(np.float32) for _ in range(n)]


def test_calibrated_network_normalises_every_study_with_the_cohort_statistics():
    net = _random_vnet(**SMALL)
    a, b, c = _arrays(3)
    # Calibrated on one study, the fixed statistics are that study's own: the same output as before on it...
    single = calibrate(net, [a])
    assert single.config["norm"] == "cohort" and net.config["norm"] == "instance"
    assert np.allclose(predict_probabilities(single, a, CPU), predict_probabilities(net, a, CPU), atol=1e-5)
    # ... but another study is no longer normalised by its own statistics.
    assert not np.allclose(predict_probabilities(single, b, CPU), predict_probabilities(net, b, CPU), atol=1e-3)
    # Several studies: the first layer's statistics are their mean and pooled variance.
    cohort = calibrate(net, [a, b, c])
    first = next(m for m in cohort.modules() if isinstance(m, torch.nn.InstanceNorm3d))
    with torch.no_grad():
        # What predict_probabilities feeds a network without down-sampling: padded to its divisor.
        inputs = [net.encoder[0].body[0](_pad_to(torch.from_numpy(x)[None], net.divisor)[0]) for x in (a, b, c)]
    means = torch.stack([x.mean(dim=(0, 2, 3, 4)) for x in inputs])
    variances = torch.stack([x.var(dim=(0, 2, 3, 4), unbiased=False) for x in inputs])
    assert torch.allclose(first.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(first.running_var, (variances + (means - means.mean(0)) ** 2).mean(0), rtol=1e-4)
    with pytest.raises(ValueError, match="already uses fixed"):
        calibrate(cohort, [a])


def test_cohort_statistics_survive_the_weights_file_and_run_on_onnx_runtime(tmp_path):
    net = calibrate(_random_vnet(**SMALL), _arrays(2))
    path = tmp_path / "cohort.npz"
    save_weights(net, path, {"note": "calibrated"})
    loaded, _ = load_weights(path)
    assert loaded.config["norm"] == "cohort"
    for (name, expected), got in zip(net.state_dict().items(), loaded.state_dict().values()):
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(expected, got), name  # float32 in the file, not float16
    x = torch.randn(1, 4, 32, 16, 48)
    with torch.no_grad():
        expected = loaded(x)
    from gliomasuite.segmentation.onnx_runner import OnnxVNet, onnxruntime_available

    if not onnxruntime_available():
        pytest.skip("onnxruntime and onnx are not installed (pip install '.[onnx]')")

    assert torch.allclose(OnnxVNet(loaded, threads=1)(x), expected, atol=1e-4)


def test_fine_tuning_with_cohort_statistics_keeps_them_fixed(tmp_path):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.cache import build_cache

    make_demo_study(tmp_path / "cases" / "Synthetic_7", seed=7)
    cache = build_cache(tmp_path / "cases", tmp_path / "cache", log=lambda m: None)
    config = dict(SMALL, encoder_convs=(1, 2, 2, 2, 2))  # the training command's default encoder
    start = calibrate(_random_vnet(**config), _arrays(2))
    save_weights(start, tmp_path / "start.npz", input_downsample=2)
    args = ["--cache", str(cache), "--iterations", "2", "--patch", "32", "32", "32", "--downsample", "2",
            "--channels", "4", "8", "8", "16", "16", "--decoder-convs", "1", "1", "1", "1", "--threads", "1",
            "--lr", "1e-2", "--norm", "cohort"]
    refused = _run_training(args + ["--out", str(tmp_path / "no-init")])
    assert refused.returncode != 0 and "give --init-weights" in refused.stderr
    done = _run_training(args + ["--out", str(tmp_path / "run"), "--init-weights", str(tmp_path / "start.npz"),
                                 "--export", str(tmp_path / "tuned.npz")])
    assert done.returncode == 0, done.stderr[-2000:]
    tuned, _ = load_weights(tmp_path / "tuned.npz")
    assert tuned.config["norm"] == "cohort"
    before, after = start.state_dict(), tuned.state_dict()
    for name in before:
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(before[name], after[name]), f"{name} moved during training"
    assert not torch.allclose(before["heads.0.weight"].half().float(), after["heads.0.weight"]), "nothing learned"


def test_mirrored_hemisphere_is_a_tumour_free_copy_of_the_free_side(tmp_path):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.negatives import mirror_healthy_hemisphere, write_mirrored_case

    study = make_demo_study(tmp_path / "GliomaDemo", seed=1)
    images, labels, info = mirror_healthy_hemisphere(study)
    assert info["symmetry"] > 0.9 and info["margin_voxels"] >= 4 and info["kept"] == "high x"
    assert not sitk.GetArrayFromImage(labels).any()
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "GliomaDemo_flair.nii.gz")))
    mirrored = sitk.GetArrayFromImage(images["flair"])
    assert images["flair"].GetOrigin() == sitk.ReadImage(str(study / "GliomaDemo_flair.nii.gz")).GetOrigin()
    plane = int(round(2 * info["plane_x"]))
    x = np.arange(original.shape[-1])
    kept = x >= info["plane_x"]
    assert np.array_equal(mirrored[..., kept], original[..., kept])
    inside = (plane - x >= 0) & (plane - x < original.shape[-1])
    assert np.array_equal(mirrored[..., inside], mirrored[..., plane - x[inside]])  # symmetric
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "GliomaDemo_seg.nii.gz")))
    assert not truth[..., kept].any() and truth.any()  # the tumour was all on the side dropped
    folder = write_mirrored_case(study, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"Mirrored_GliomaDemo_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair", "seg"))


def test_a_tumour_across_the_midline_is_not_mirrored(tmp_path):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.negatives import mirror_healthy_hemisphere

    study = make_demo_study(tmp_path / "GliomaDemo", seed=1)
    seg_path = study / "GliomaDemo_seg.nii.gz"
    seg = sitk.ReadImage(str(seg_path))
    array = sitk.GetArrayFromImage(seg)
    array[70:80, 110:120, 100:140] = 2  # edema reaching across the middle of the brain
    crossed = sitk.GetImageFromArray(array)
    crossed.CopyInformation(seg)
    sitk.WriteImage(crossed, str(seg_path))
    with pytest.raises(GliomaSuiteError, match="reaches the mid-sagittal plane"):
        mirror_healthy_hemisphere(study)


@pytest.mark.parametrize("seed", [0, 1])
def test_shipped_model_finds_no_tumour_in_a_tumour_free_demo_brain_and_says_so(tmp_path, seed):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.inference import segment_study
    from gliomasuite.study import load_study

    result = segment_study(load_study(make_demo_study(tmp_path / "healthy", seed=seed, tumour=False)), device="cpu")
    assert result.volumes_cm3["WT"] < 1.0  # vnet-brats-v1 (per-study normalisation) found 156-274 cm3
    assert any("No tumour was found" in w or "may hold no tumour" in w for w in result.warnings)


@pytest.mark.skipif(not DATA, reason="GLIOMASUITE_DATA is not set (real BraTS cases needed)")
def test_shipped_model_on_a_real_tumour_free_brain_it_never_trained_on(tmp_path):
    """Brats18_CBICA_AOZ_1 is held out of training; its tumour-free hemisphere mirrored is a real brain
    without tumour. vnet-brats-v1 found 294 cm3 of tumour in it, vnet-brats-v2 20, the default ensemble 15."""
    from gliomasuite.segmentation.inference import segment_study
    from gliomasuite.segmentation.negatives import write_mirrored_case
    from gliomasuite.study import load_study

    case = Path(DATA) / "brats" / "Brats18_CBICA_AOZ_1"
    if not case.is_dir():
        pytest.skip(f"{case} is not in GLIOMASUITE_DATA")
    result = segment_study(load_study(write_mirrored_case(case, tmp_path)), device="cpu")
    assert result.volumes_cm3["WT"] < 30.0
    assert not result.brain_check  # a real brain passes the brain check
