"""The uncertainty map (``segment --uncertainty``): its arithmetic, the regions it names, the command."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gliomasuite.segmentation.inference import Ensemble, predict_probabilities
from gliomasuite.segmentation.uncertainty import uncertain_regions, uncertainty_from_spread
from gliomasuite.segmentation.vnet import VNet

from test_cli import assert_one_sentence_error, needs_model, run_cli

SMALL = dict(channels=(4, 8, 8, 16, 16), encoder_convs=(1, 1, 1, 1, 1), decoder_convs=(1, 1, 1, 1))
FLIPS = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


def test_spread_is_the_standard_deviation_over_every_member_and_flip():
    torch.manual_seed(0)
    members = [VNet(**SMALL).eval(), VNet(**SMALL).eval()]
    array = np.random.default_rng(0).normal(size=(4, 32, 32, 32)).astype(np.float32)
    device = torch.device("cpu")
    mean, std = predict_probabilities(Ensemble(members), array, device, tta=True, spread=True)

    passes = []  # each pass by hand: the member on the flipped input, flipped back
    with torch.inference_mode():
        for member in members:
            for dims in FLIPS:
                x = torch.from_numpy(array)[None]
                x = torch.flip(x, dims) if dims else x
                logits = member(x)
                logits = torch.flip(logits, dims) if dims else logits
                passes.append(torch.sigmoid(logits[0]).numpy())
    passes = np.stack(passes)
    np.testing.assert_allclose(mean, passes.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(std, passes.std(axis=0), atol=1e-4)
    assert std.max() > 0.01  # the members and flips do differ: a zero map would pass the above trivially
    np.testing.assert_allclose(mean, predict_probabilities(Ensemble(members), array, device, tta=True), atol=1e-6)
    assert uncertainty_from_spread(std).shape == array.shape[1:]


def _ball(shape, centre, radius):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def test_regions_say_which_boundary_which_side_and_how_much():
    shape = (80, 80, 80)  # 1 mm LPS crop: z superior, y posterior, x the patient's left
    brain = np.ones(shape, bool)
    centre = (40, 40, 55)  # left of the midline (x = 39.5)
    labels = np.where(_ball(shape, centre, 10), 2, 0).astype(np.uint8)
    std = np.zeros((3,) + shape, np.float32)
    shell = _ball(shape, centre, 12) & ~_ball(shape, centre, 8)
    z = np.indices(shape)[0]
    std[0][shell & (z > centre[0] + 8)] = 0.3            # the whole-tumour edge above the tumour
    std[2][shell & (z < centre[0] - 9)] = 0.25           # a smaller enhancing edge below it
    spot = _ball(shape, (40, 40, 15), 4)                 # 30 mm away, in the right hemisphere
    std[1][spot] = 0.4
    std[0][_ball(shape, (10, 10, 10), 1)] = 0.45         # a speck too small to list

    regions = uncertain_regions(std, labels, brain)
    words = [r["sentence"] for r in regions]
    assert len(regions) == 3, words
    top = regions[0]
    assert top["boundary"].startswith("the edema") and top["side"] == "left hemisphere", words
    assert "superior" in top["place"]
    assert top["cm3"] == pytest.approx((shell & (z > centre[0] + 8)).sum() / 1000, abs=0.06)
    spot_region = next(r for r in regions if "separate spot" in r["boundary"])
    assert spot_region["side"] == "right hemisphere" and spot_region["cm3"] == pytest.approx(spot.sum() / 1000, abs=0.06)
    assert "mm from the labelled tumour" in spot_region["place"]
    enhancing = next(r for r in regions if "enhancing" in r["boundary"])
    assert "inferior" in enhancing["place"]
    assert [r["cm3"] for r in regions] == sorted((r["cm3"] for r in regions), reverse=True)
    assert uncertain_regions(np.zeros_like(std), labels, brain) == []


@needs_model
def test_segment_writes_the_map_on_the_study_grid_beside_the_tta_labels(tmp_path):
    from gliomasuite.demo import make_demo_study

    study = make_demo_study(tmp_path / "demo", seed=0)
    out, unc, tta = tmp_path / "seg.nii.gz", tmp_path / "uncertainty.nii.gz", tmp_path / "tta.nii.gz"
    result = run_cli("--json-progress", "segment", study, "-o", out, "--uncertainty", unc)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])["result"]
    assert summary["uncertainty"] == str(unc)
    assert all("cm3 uncertain" in r["sentence"] for r in summary["uncertain_regions"])
    t1ce = sitk.ReadImage(str(study / "GliomaDemo_t1ce.nii.gz"))
    image = sitk.ReadImage(str(unc))
    assert image.GetSize() == t1ce.GetSize() and np.allclose(image.GetOrigin(), t1ce.GetOrigin())
    u = sitk.GetArrayFromImage(image)
    assert u.min() >= 0 and u.max() <= 0.5 + 1e-6 and u.max() > 0.05
    assert run_cli("segment", study, "-o", tta, "--tta").returncode == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tta))))


def test_the_map_may_not_replace_the_label_map(tmp_path):
    from test_cli import write_study

    study = write_study(tmp_path / "study")
    out = tmp_path / "seg.nii.gz"
    result = run_cli("segment", study, "-o", out, "--uncertainty", out)
    assert_one_sentence_error(result, "--uncertainty", "same file")
    assert not out.exists()
