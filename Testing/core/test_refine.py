"""The 1 mm refinement network (gliomasuite/segmentation/refine.py): where it runs, that it starts as the
coarse answer, that it trains on coarse probabilities moved with the images, and that it loads only as a
refiner."""

import numpy as np
import pytest
import torch

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.segmentation.config import TrainConfig
from gliomasuite.segmentation.refine import refine_probabilities, tumour_box
from gliomasuite.segmentation.training import PatchSampler, build_model

CASES = ["Patient_1", "Synthetic_3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Two demo cases cached for training, and as their 'coarse' probabilities their own truth regions."""
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.cache import build_cache, load_case, save_array

    root = tmp_path_factory.mktemp("cases")
    make_demo_study(root / "Patient_1", seed=1)
    make_demo_study(root / "Synthetic_3", seed=3)
    out = tmp_path_factory.mktemp("cache")
    build_cache(root, out, log=lambda m: None)
    coarse = out / "coarse"
    coarse.mkdir()
    for name in CASES:
        _, labels = load_case(out, name)
        regions = np.stack([labels > 0, (labels == 1) | (labels == 4), labels == 4]).astype(np.uint8) * 255
        save_array(coarse / f"{name}_coarse.npy.xz", regions)
    return out


def _config(cache, out="", **kw):
    return TrainConfig(cache=str(cache), out=str(out), downsample=1, patch=(32, 32, 32), channels=(4, 8, 16, 32),
                       decoder_convs=(1, 1, 1), coarse=str(cache / "coarse"), modality_dropout=0.0, **kw)


def test_the_box_holds_the_tumour_and_its_margin_in_whole_network_blocks():
    wt = np.zeros((60, 70, 80), bool)
    assert tumour_box(wt) is None  # nothing found: nothing to refine
    wt[20:25, 30:33, 40:50] = True
    box = tumour_box(wt, margin=5, divisor=8)
    for s, (lo, hi) in zip(box, [(20, 25), (30, 33), (40, 50)]):
        assert s.start <= lo - 5 and s.stop >= hi + 5
        assert (s.stop - s.start) % 8 == 0
    near_edge = np.zeros((30, 30, 30), bool)
    near_edge[0:3, 27:30, 10:12] = True
    box = tumour_box(near_edge, margin=4, divisor=8)
    assert all(0 <= s.start < s.stop <= 30 and (s.stop - s.start) % 8 == 0 for s in box)


def test_a_refiner_that_learned_nothing_returns_the_coarse_answer_and_never_touches_what_lies_outside(cache):
    from gliomasuite.segmentation.cache import load_case

    model = build_model(_config(cache)).eval()
    assert model.config["in_channels"] == 7 and not model.deep_supervision
    image, labels = load_case(cache, "Patient_1")
    coarse = np.random.RandomState(0).rand(3, *labels.shape).astype(np.float32) * 0.3
    coarse[:, labels > 0] = 0.9
    refined = refine_probabilities([model], image, coarse, torch.device("cpu"))
    np.testing.assert_allclose(refined, coarse, atol=2e-4)
    box = tumour_box(coarse[0] > 0.5, divisor=model.divisor)
    outside = np.ones(labels.shape, bool)
    outside[box] = False
    assert outside.any() and np.array_equal(refined[:, outside], coarse[:, outside])
    empty = np.zeros_like(coarse)
    assert np.array_equal(refine_probabilities([model], image, empty, torch.device("cpu")), empty)


def test_the_coarse_channels_move_with_the_images_and_are_never_rescaled(cache):
    sampler = PatchSampler(_config(cache), CASES, torch.device("cpu"), rank_seed=0)
    for _ in range(4):  # flips and affine moves are drawn anew each time
        images, targets = sampler.batch()
        assert images.shape == (2, 7, 32, 32, 32)
        # the 'coarse' input here is the truth itself: after the same moves it must still be the target
        torch.testing.assert_close(images[:, 4:], targets, atol=1e-3, rtol=0)


def test_a_refiner_trains_exports_and_loads_only_as_a_refiner(cache, tmp_path):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.inference import Refined, load_model, load_refiner, segment_study
    from gliomasuite.segmentation.training import export_checkpoint, train
    from gliomasuite.study import load_study

    out = train(_config(cache, tmp_path / "run", iterations=4, batch_size=1, log_every=2, device="cpu"))
    weights = tmp_path / "refiner.npz"
    export_checkpoint(out / "checkpoint.pt", weights)
    refiner, meta = load_refiner(str(weights))
    assert meta["refines"] and refiner.config["in_channels"] == 7
    with pytest.raises(GliomaSuiteError, match="refiner"):
        load_model(str(weights))  # it cannot segment on its own
    with pytest.raises(GliomaSuiteError, match="not a 1 mm refiner"):
        load_refiner("vnet-brats-reduced-v2")

    coarse, _ = load_model("vnet-brats-reduced-v2")
    make_demo_study(tmp_path / "study", seed=5)
    study = load_study(tmp_path / "study")
    plain = segment_study(study, coarse, device="cpu", engine="torch")
    refined = segment_study(study, Refined(coarse, [refiner], "refined"), device="cpu", engine="torch")
    assert refined.model == "refined" and plain.volumes_cm3["WT"] > 0
    # four steps barely move it from the coarse answer
    assert abs(refined.volumes_cm3["WT"] - plain.volumes_cm3["WT"]) < 0.05 * plain.volumes_cm3["WT"]


def test_the_onnx_runtime_refiner_agrees_with_pytorch(cache):
    pytest.importorskip("onnxruntime")
    from gliomasuite.segmentation.cache import load_case
    from gliomasuite.segmentation.inference import Refined, network_for, predict_probabilities

    torch.manual_seed(0)
    refiner = build_model(_config(cache)).eval()
    torch.nn.init.normal_(refiner.heads[0].weight, std=0.1)  # a refiner that changes something
    from gliomasuite.segmentation.inference import load_model

    coarse, _ = load_model("vnet-brats-reduced-v2")
    image, _ = load_case(cache, "Patient_1")
    model = Refined(coarse, [refiner], "r")
    results = {}
    for engine in ("torch", "onnxruntime"):
        network, used, _ = network_for(model, torch.device("cpu"), engine)
        assert used == engine
        results[engine] = predict_probabilities(network, image, torch.device("cpu"))
    plain = predict_probabilities(network_for(coarse, torch.device("cpu"), "torch")[0], image, torch.device("cpu"))
    assert np.abs(results["torch"] - plain).max() > 0.01  # the refiner did change the answer
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], atol=2e-3)
