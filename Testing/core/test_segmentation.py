"""The V-Net, the shared preprocessing and its inverse, weights files, training and post-processing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gliomasuite import labels as L
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.preprocess import label_to_prepared, prepare, restore_labels, restore_probabilities
from gliomasuite.segmentation.inference import network_for, postprocess, predict_probabilities
from gliomasuite.segmentation.vnet import VNet
from gliomasuite.segmentation.weights import load_weights, save_weights, sha256

SMALL = dict(channels=(4, 8, 8, 16, 16), encoder_convs=(1, 1, 1, 1, 1), decoder_convs=(1, 1, 1, 1))


def _study_images(direction=None, spacing=(1.0, 1.0, 1.0), size=(40, 36, 30), seed=0):
    """Four modalities with a bright blob inside an ellipsoidal 'brain', on one grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: size[2], : size[1], : size[0]]
    c = np.array(size[::-1]) / 2
    brain = ((z - c[0]) / (c[0] * 0.8)) ** 2 + ((y - c[1]) / (c[1] * 0.8)) ** 2 + ((x - c[2]) / (c[2] * 0.8)) ** 2 < 1
    tumour = ((z - c[0]) ** 2 + (y - c[1] - 3) ** 2 + (x - c[2] + 4) ** 2) < 36
    images = {}
    for i, m in enumerate(("t1", "t1ce", "t2", "flair")):
        arr = (brain * (100 + 10 * i) + tumour * 80 + rng.normal(0, 3, size[::-1]) * brain).astype(np.float32)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin((-20.0, 15.0, 7.5))
        if direction is not None:
            img.SetDirection(direction)
        images[m] = img
    labels = sitk.GetImageFromArray((tumour * L.ET).astype(np.uint8))
    labels.CopyInformation(images["t1ce"])
    return images, labels


def test_vnet_shapes_and_deep_supervision():
    net = VNet(**SMALL)
    x = torch.zeros(2, 4, 32, 32, 32)
    net.train()
    outputs = net(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8)]
    net.eval()
    with torch.no_grad():
        assert tuple(net(x).shape) == (2, 3, 32, 32, 32)


def test_vnet_rejects_stage_lists_of_the_wrong_length():
    with pytest.raises(ValueError):
        VNet(channels=(4, 8), encoder_convs=(1, 1, 1), decoder_convs=(1,))


@pytest.mark.parametrize("direction", [None, (-1, 0, 0, 0, -1, 0, 0, 0, 1), (0, 1, 0, 1, 0, 0, 0, 0, -1)])
def test_prepare_then_restore_is_exact_on_1mm_grids(direction):
    images, labels = _study_images(direction=direction)
    prepared = prepare(images)
    assert prepared.array.shape[0] == 4 and prepared.array.dtype == np.float32
    # z-scored over the brain: mean 0, sd 1 per channel (before clipping, which these values never reach)
    brain_values = prepared.array[:, prepared.brain]
    assert np.allclose(brain_values.mean(axis=1), 0, atol=1e-4)
    assert np.allclose(brain_values.std(axis=1), 1, atol=1e-3)
    assert np.all(prepared.array[:, ~prepared.brain] == 0)
    cropped = label_to_prepared(labels, prepared)
    back = restore_labels(cropped, prepared)
    assert back.GetSize() == labels.GetSize()
    assert np.allclose(back.GetOrigin(), labels.GetOrigin()) and back.GetDirection() == labels.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))


def test_prepare_resamples_anisotropic_input_to_1mm_and_back():
    images, labels = _study_images(spacing=(0.9, 1.1, 2.0))
    prepared = prepare(images)
    assert prepared.canonical.GetSpacing() == (1.0, 1.0, 1.0)
    back = sitk.GetArrayFromImage(restore_labels(label_to_prepared(labels, prepared), prepared)) > 0
    truth = sitk.GetArrayFromImage(labels) > 0
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice > 0.9
    probs = np.stack([label_to_prepared(labels, prepared) > 0] * 3).astype(np.float32)
    prob_image = restore_probabilities(probs, prepared)
    assert prob_image.GetNumberOfComponentsPerPixel() == 3 and prob_image.GetSize() == labels.GetSize()


def test_weights_round_trip_and_checksum(tmp_path):
    torch.manual_seed(0)
    net = VNet(**SMALL).eval()
    path = tmp_path / "w.npz"
    digest = save_weights(net, path, {"note": "test"}, input_downsample=2)
    assert digest == sha256(path)
    loaded, meta = load_weights(path, expected_sha256=digest)
    assert meta == {"note": "test"} and loaded.input_downsample == 2
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        ref = net.half().float()(x)  # weights are stored in float16
        assert torch.allclose(loaded(x), ref, atol=1e-5)
    with pytest.raises(GliomaSuiteError, match="does not match its registered checksum"):
        load_weights(path, expected_sha256="0" * 64)


def test_weights_file_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([{"code": "print('hi')"}], dtype=object))
    with pytest.raises(GliomaSuiteError, match="cannot be read"):
        load_weights(path)


def test_connected_components_are_scipys_face_connected_ones():
    """Post-processing labels components with SimpleITK (no scipy import on the segment path); they must be
    exactly scipy.ndimage.label's default (face-connected) components, up to their numbering."""
    from scipy import ndimage

    from gliomasuite.segmentation.inference import _components

    rng = np.random.default_rng(0)
    for threshold in (0.5, 0.7, 0.9, 0.97):
        mask = rng.random((30, 41, 52)) > threshold
        expected, n = ndimage.label(mask)
        got, k = _components(mask)
        assert k == n and got.shape == mask.shape and not got[~mask].any()
        pairs = set(zip(expected[mask].tolist(), got[mask].tolist()))
        assert len(pairs) == n == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert _components(np.zeros((4, 5, 6), bool))[1] == 0


def test_postprocess_nests_regions_and_relabels_weak_enhancing_islands():
    probs = np.zeros((3, 40, 40, 40), dtype=np.float32)
    probs[0, 5:30, 5:30, 5:30] = 0.9          # whole tumour
    probs[1, 10:25, 10:25, 10:25] = 0.9       # core
    probs[2, 12:22, 12:22, 12:22] = 0.95      # confident enhancing block
    probs[2, 26:29, 26:29, 26:29] = 0.6       # weak 27-voxel island outside TC: not ET (nesting)
    probs[1, 26:29, 26:29, 26:29] = 0.9
    probs[2, 26:29, 26:29, 26:29] = 0.6       # now inside TC but small and unsure -> necrosis
    probs[0, 35:38, 35:38, 35:38] = 0.9       # 27-voxel speck far away -> removed
    labels = postprocess(probs)
    assert set(np.unique(labels)) == {0, L.NCR, L.ED, L.ET}
    assert labels[36, 36, 36] == 0
    assert labels[27, 27, 27] == L.NCR
    assert labels[15, 15, 15] == L.ET and labels[11, 11, 11] == L.NCR and labels[6, 6, 6] == L.ED
    masks = L.region_masks(labels)
    assert not (masks["ET"] & ~masks["TC"]).any() and not (masks["TC"] & ~masks["WT"]).any()


def test_predict_probabilities_handles_downsampled_networks_and_odd_shapes():
    torch.manual_seed(0)
    net = VNet(**SMALL).eval()
    net.input_downsample = 2
    array = np.random.default_rng(0).normal(size=(4, 37, 29, 33)).astype(np.float32)
    probs = predict_probabilities(net, array, torch.device("cpu"), tta=True)
    assert probs.shape == (3, 37, 29, 33)
    assert np.all((probs >= 0) & (probs <= 1))


def _random_vnet(**config):
    """A V-Net with non-trivial norm scales, shifts and PReLU slopes (fresh ones are 1, 0 and 0.25)."""
    torch.manual_seed(0)
    net = VNet(**config).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("config", [SMALL, dict(channels=(4, 8, 16), encoder_convs=(2, 1, 3), decoder_convs=(2, 1),
                                                deep_supervision=False)])
def test_onnx_runtime_twin_computes_the_vnet_forward_pass(config):
    from gliomasuite.segmentation.onnx_runner import OnnxVNet, onnxruntime_available, vnet_to_onnx

    if not onnxruntime_available():
        pytest.skip("onnxruntime and onnx are not installed (pip install '.[onnx]')")

    net = _random_vnet(**config)
    vnet_to_onnx(net.eval(), check=True)  # a valid ONNX graph by onnx's own checker, not only ORT's loader
    x = torch.randn(2, 4, 32, 16, 48)
    with torch.no_grad():
        expected = net(x)
    twin = OnnxVNet(net, threads=1)
    assert twin.divisor == net.divisor
    assert torch.allclose(twin(x), expected, atol=1e-4)


def test_the_onnx_graph_is_cached_by_the_weights_checksum_and_a_damaged_copy_is_rebuilt(tmp_path, monkeypatch):
    from gliomasuite.segmentation import onnx_runner

    if not onnx_runner.onnxruntime_available():
        pytest.skip("onnxruntime and onnx are not installed (pip install '.[onnx]')")
    monkeypatch.setenv("GLIOMASUITE_CACHE", str(tmp_path))
    net = _random_vnet(**SMALL).eval()
    x = torch.randn(1, 4, 32, 16, 48)
    with torch.no_grad():
        expected = net(x)
    first = onnx_runner.OnnxVNet(net, threads=1)(x)
    cached = tmp_path / "onnx" / f"{onnx_runner.graph_key(net)}.onnx"
    assert cached.is_file() and (tmp_path / "onnx" / f"{cached.name}.sha256").is_file()
    built = []
    monkeypatch.setattr(onnx_runner, "vnet_to_onnx", lambda model: built.append(model) or pytest.fail("rebuilt"))
    assert torch.allclose(onnx_runner.OnnxVNet(net, threads=1)(x), first)  # read from the cache, not rebuilt
    monkeypatch.undo()
    monkeypatch.setenv("GLIOMASUITE_CACHE", str(tmp_path))
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")  # damaged: its checksum no longer matches
    assert torch.allclose(onnx_runner.OnnxVNet(net, threads=1)(x), expected, atol=1e-4)
    other = _random_vnet(**SMALL)
    assert onnx_runner.graph_key(other) == onnx_runner.graph_key(net)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert onnx_runner.graph_key(other) != onnx_runner.graph_key(net)  # other weights, another graph


def test_a_loaded_model_keeps_its_onnx_session_until_its_weights_or_threads_change(tmp_path, monkeypatch):
    """A batch worker segments study after study with one loaded model: its ONNX Runtime session is made once;
    a weight changed in place (training, load_state_dict) or another thread count makes a new one."""
    from gliomasuite.segmentation.inference import network_for
    from gliomasuite.segmentation.onnx_runner import onnxruntime_available

    if not onnxruntime_available():
        pytest.skip("onnxruntime and onnx are not installed (pip install '.[onnx]')")
    monkeypatch.setenv("GLIOMASUITE_CACHE", str(tmp_path))
    net = _random_vnet(**SMALL).eval()
    cpu = torch.device("cpu")
    first, engine, _ = network_for(net, cpu)
    assert engine == "onnxruntime" and network_for(net, cpu)[0] is first
    with torch.no_grad():
        next(net.parameters()).add_(0.05)
    changed = network_for(net, cpu)[0]
    x = torch.randn(1, 4, 32, 16, 48)
    with torch.no_grad():
        assert changed is not first and torch.allclose(changed(x), net(x), atol=1e-4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert network_for(net, cpu)[0] is not changed
    finally:
        torch.set_num_threads(threads)


def test_engine_choice_and_fallbacks_to_pytorch(monkeypatch):
    from gliomasuite.segmentation.onnx_runner import onnxruntime_available

    net = _random_vnet(**SMALL)
    net.input_downsample = 2
    cpu = torch.device("cpu")
    assert network_for(net, cpu, "torch")[:2] == (net, "torch")
    with pytest.raises(GliomaSuiteError, match="Unknown engine"):
        network_for(net, cpu, "tensorrt")
    array = np.random.default_rng(1).normal(size=(4, 37, 29, 33)).astype(np.float32)
    expected = predict_probabilities(net, array, cpu, tta=True)
    if onnxruntime_available():
        network, engine, problem = network_for(net, cpu, "auto")
        assert engine == "onnxruntime" and problem is None
        assert np.allclose(predict_probabilities(network, array, cpu, tta=True), expected, atol=1e-5)
        # A network the ONNX graph cannot express runs on PyTorch, and the user is told why.
        net.heads[0] = torch.nn.Sequential(net.heads[0], torch.nn.Tanh())
        network, engine, problem = network_for(net, cpu, "auto")
        assert (network, engine) == (net, "torch") and "Tanh" in problem
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert network_for(net, cpu, "auto") == (net, "torch", None)
    with pytest.raises(GliomaSuiteError, match="pip install 'gliomasuite\\[onnx\\]'"):
        network_for(net, cpu, "onnxruntime")


def test_an_ensemble_averages_its_members_probabilities_on_either_engine():
    from gliomasuite.segmentation.inference import Ensemble, required_modalities

    torch.manual_seed(1)
    one = _random_vnet(**SMALL)
    one.input_downsample = 2
    other = VNet(**SMALL).eval()  # different weights, and run at 1 mm: each member as it runs alone
    other.optional_modalities = ("t1", "t2")
    ensemble = Ensemble([one, other], "pair")
    assert required_modalities(ensemble) == ("t1", "t1ce", "t2", "flair")  # only what every member can skip
    cpu = torch.device("cpu")
    array = np.random.default_rng(2).normal(size=(4, 37, 29, 33)).astype(np.float32)
    expected = (predict_probabilities(one, array, cpu, tta=True) + predict_probabilities(other, array, cpu, tta=True)) / 2
    assert not np.allclose(expected, predict_probabilities(one, array, cpu, tta=True), atol=1e-3)
    for engine in ("torch", "auto"):
        network, used, problem = network_for(ensemble, cpu, engine)
        assert isinstance(network, Ensemble) and problem is None
        progress = []
        probs = predict_probabilities(network, array, cpu, tta=True, progress=lambda f, m: progress.append(f))
        assert np.allclose(probs, expected, atol=1e-5), used
        assert used == ("torch" if engine == "torch" else network_for(one, cpu, "auto")[1])  # both members agree
        assert progress == sorted(progress) and progress[-1] < 1


def test_a_shipped_ensemble_loads_its_members_by_checksum(tmp_path, monkeypatch):
    """The default model is an ensemble entry of the registry; a member file that does not match its
    checksum is refused, as a single model's is."""
    import shutil

    from gliomasuite.segmentation import inference

    entries = inference.registry()["models"]
    default = entries[inference.DEFAULT_MODEL]
    model, meta = inference.load_model()
    assert [m.name for m in model.members] == default["members"] and len(meta["members"]) == len(default["members"])

    for name in default["members"]:
        shutil.copy(inference.MODELS_DIR / entries[name]["file"], tmp_path / entries[name]["file"])
    tampered = tmp_path / entries[default["members"][-1]]["file"]
    tampered.write_bytes(tampered.read_bytes()[:-1] + b"x")
    (tmp_path / "models.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setattr(inference, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(inference, "REGISTRY", tmp_path / "models.json")
    with pytest.raises(GliomaSuiteError, match="(?i)checksum|sha-256"):
        inference.load_model()

    damaged = dict(entries, broken=dict(default, members=[default["members"][0], "no-such-network"]))
    (tmp_path / "models.json").write_text(json.dumps({"models": damaged}))
    with pytest.raises(GliomaSuiteError, match="'broken' is damaged.*'no-such-network'"):
        inference.load_model("broken")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.cache import build_cache

    root = tmp_path_factory.mktemp("cases")
    make_demo_study(root / "Synthetic_7", seed=7)
    cache = tmp_path_factory.mktemp("cache")
    build_cache(root, cache, log=lambda m: None)
    return cache


def _train_args(cache, out, iterations):
    return ["--cache", str(cache), "--out", str(out), "--iterations", str(iterations), "--patch", "32", "32", "32",
            "--downsample", "2", "--channels", "4", "8", "8", "16", "16", "--decoder-convs", "1", "1", "1", "1",
            "--log-every", "1", "--threads", "1"]


def _run_training(args, env_extra=None, launcher=None):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "GliomaSuite"))
    env.update(env_extra or {})
    cmd = (launcher or [sys.executable, "-m"]) + ["gliomasuite.segmentation.training"] + args
    return subprocess.run(cmd, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)


def test_cache_holds_the_case_quantised(tiny_cache):
    from gliomasuite.segmentation.cache import cached_cases, load_case

    assert cached_cases(tiny_cache) == ["Synthetic_7"]
    image, labels = load_case(tiny_cache, "Synthetic_7")
    assert image.shape[0] == 4 and image.shape[1:] == labels.shape
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and (labels == 4).any()


def test_training_is_reproducible_from_a_seed_and_resumes(tiny_cache, tmp_path):
    for name in ("a", "b"):
        result = _run_training(_train_args(tiny_cache, tmp_path / name, 3))
        assert result.returncode == 0, result.stderr
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    result = _run_training(_train_args(tiny_cache, tmp_path / "a", 5) + ["--resume", "--export", str(tmp_path / "w.npz")])
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    model, meta = load_weights(tmp_path / "w.npz")
    assert meta["training_steps"] == 5 and model.input_downsample == 2


def test_distributed_training_with_two_gloo_processes(tiny_cache, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    result = _run_training(_train_args(tiny_cache, tmp_path / "ddp", 2) + ["--device", "cpu"],
                           env_extra={"OMP_NUM_THREADS": "1"}, launcher=launcher)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2


def test_fine_tuning_starts_from_given_weights_and_refuses_another_shape(tiny_cache, tmp_path):
    first = _run_training(_train_args(tiny_cache, tmp_path / "a", 2) + ["--export", str(tmp_path / "w.npz")])
    assert first.returncode == 0, first.stderr
    source, _ = load_weights(tmp_path / "w.npz")
    # lr 0: one step must leave the network exactly where --init-weights put it
    tuned = _run_training(_train_args(tiny_cache, tmp_path / "b", 1) + ["--init-weights", str(tmp_path / "w.npz"),
                                                                        "--lr", "0"])
    assert tuned.returncode == 0, tuned.stderr
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    expected = source.state_dict()
    assert all(torch.equal(state[k], expected[k].float()) for k in expected)
    other = _train_args(tiny_cache, tmp_path / "c", 1)
    other[other.index("--channels") + 1:other.index("--channels") + 6] = ["4", "8", "16", "16", "32"]
    refused = _run_training(other + ["--init-weights", str(tmp_path / "w.npz")])
    assert refused.returncode != 0 and "does not fit this network configuration" in refused.stderr


def test_case_folds_partition_the_cases_the_same_way_whatever_their_order():
    from gliomasuite.segmentation.config import case_folds

    names = [f"case{i:02d}" for i in range(25)]
    folds = case_folds(names, 5, seed=3)
    assert sorted(sum(folds, [])) == names  # every case in exactly one fold
    assert [len(f) for f in folds] == [5] * 5
    assert case_folds(names[::-1], 5, seed=3) == folds
    assert case_folds(names, 5, seed=4) != folds
    with pytest.raises(ValueError, match="cannot split 25 cases into 26 folds"):
        case_folds(names, 26)


@pytest.mark.parametrize("case", ["BraTS2021_00006", "Brats18_CBICA_AME_1"])
def test_one_pass_without_monai_gives_monai_s_single_window_result(case):
    """Whole-input inference calls the network directly (no MONAI import on the segment path): the same
    probabilities as MONAI's sliding window with one window covering the input, so the same label map."""
    from monai.inferers import sliding_window_inference

    from gliomasuite.segmentation.inference import load_model
    from gliomasuite.study import load_study

    root = os.environ.get("GLIOMASUITE_DATA")
    if not root:
        pytest.skip("GLIOMASUITE_DATA is not set (the real BraTS cases live there)")
    prepared = prepare(load_study(Path(root) / "brats" / case).images)
    model, _ = load_model("vnet-brats-v2")
    network, _, _ = network_for(model, torch.device("cpu"), "auto")
    direct = predict_probabilities(network, prepared.array, torch.device("cpu"))

    class ThroughMonai:  # the network as MONAI ran it before: one window over the whole input
        divisor, input_downsample = network.divisor, network.input_downsample

        def __call__(self, x):
            return sliding_window_inference(x, list(x.shape[-3:]), 1, network, overlap=0.0, mode="gaussian")

    reference = predict_probabilities(ThroughMonai(), prepared.array, torch.device("cpu"))
    assert np.abs(direct - reference).max() < 1e-5
    assert np.array_equal(postprocess(direct, prepared.brain), postprocess(reference, prepared.brain))
