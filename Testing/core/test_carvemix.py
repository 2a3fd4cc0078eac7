"""Lesion mixing (CarveMix) for segmentation training: a donor's tumour pasted into another brain."""

import numpy as np
import pytest
import torch

from gliomasuite.segmentation import carvemix
from gliomasuite.segmentation.config import TrainConfig
from gliomasuite.segmentation.training import PatchSampler


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.cache import build_cache

    root = tmp_path_factory.mktemp("cases")
    make_demo_study(root / "Patient_1", seed=1)
    make_demo_study(root / "Healthy_2", seed=2, tumour=False)
    make_demo_study(root / "Synthetic_3", seed=3)
    out = tmp_path_factory.mktemp("cache")
    build_cache(root, out, log=lambda m: None)
    return out


def _sampler(cache, share):
    config = TrainConfig(cache=str(cache), out="", patch=(32, 32, 32), carvemix=share)
    return PatchSampler(config, ["Healthy_2", "Patient_1", "Synthetic_3"], torch.device("cpu"), rank_seed=0)


def test_only_real_tumours_are_donors(cache):
    sampler = _sampler(cache, 1.0)
    assert [d.name for d in sampler.donors] == ["Patient_1"]  # not the tumour-free brain, not a synthetic study
    assert _sampler(cache, 0.0).donors == []


def test_the_pasted_tumour_brings_its_own_images_and_labels_and_lands_in_the_brain(cache):
    sampler = _sampler(cache, 1.0)
    donor = sampler.donors[0]
    healthy = sampler.items[0]
    item = {"image": healthy["image"].float(), "label": healthy["label"], "target": healthy["target"].float()}
    assert not (item["label"] > 0).any()
    brain = (item["image"] != 0).any(dim=0)
    rng = np.random.RandomState(0)
    sizes = set()
    for _ in range(10):
        mixed = carvemix.carve_mix(item, donor, rng)
        assert mixed is not None
        changed = (mixed["image"] != item["image"]).any(dim=0) | (mixed["label"][0] != item["label"][0])
        tumour = mixed["label"][0] > 0
        sizes.add(int(changed.sum()))
        # the whole of the donor's tumour, with its labels
        assert tumour.sum() == (donor.classes > 0).sum()
        for value in (1, 2, 3):
            assert (mixed["label"] == value).sum() == (donor.classes == value).sum()
        assert (brain | ~changed).float().mean() > 0.99 and (tumour & ~brain).sum() <= 0.05 * tumour.sum()
        # labels and soft targets agree: every tumour voxel has whole-tumour target, none outside the change
        assert torch.all(mixed["target"][0][tumour] > 0) and not (mixed["target"][0][~changed] > 0).any()
        # the images changed only where the carved region went, and there they are the donor's values
        values = mixed["image"][:, changed]
        assert np.isin(values.numpy().round(4), donor.image.numpy().round(4)).all()
    assert len(sizes) > 1  # lambda is drawn anew each time: a rim of 0 to 3 voxels around the tumour
    assert torch.equal(item["image"], healthy["image"].float())  # the recipient's own tensors are untouched


def test_a_donor_larger_than_the_recipient_is_not_pasted(cache):
    sampler = _sampler(cache, 1.0)
    donor = sampler.donors[0]
    small = {"image": torch.ones(4, 8, 8, 8), "label": torch.zeros(1, 8, 8, 8, dtype=torch.uint8),
             "target": torch.zeros(3, 8, 8, 8)}
    assert carvemix.carve_mix(small, donor, np.random.RandomState(0)) is None


def test_a_mixed_batch_trains_on_pasted_tumours(cache):
    sampler = _sampler(cache, 1.0)
    sampler.items = [sampler.items[0]]  # the tumour-free brain only: any tumour in a patch was pasted
    images, targets = sampler.batch()
    assert images.shape == (2, 4, 32, 32, 32) and targets.shape == (2, 3, 32, 32, 32)
    assert targets[:, 0].sum() > 0
