"""Lesion mixing for training (CarveMix): a real labelled tumour carved out of one brain and pasted
into another real brain, so a few dozen labelled cases give many more tumour/brain pairings.

Method (Zhang et al., "CarveMix: A Simple Data Augmentation Method for Brain Lesion Segmentation",
MICCAI 2021): the carved region is where the signed distance to the donor's lesion is at most lambda,
drawn at random; inside the region the donor's images and labels replace the recipient's, elsewhere
the recipient is unchanged. Here the lesion is the whole tumour (all labels) and lambda runs from -1 to
3 voxels of the network grid; the lesion's own voxels are at -1 or less, so the region is always the
whole tumour with a rim of 0 to 3 voxels (0-6 mm) of its surroundings. (The paper also cuts inside
lesions; a cut through a glioma would leave an edge that no real tumour has.) The paper pastes at the
same position of co-registered images; our training cache holds each case cropped to its own brain, so
the region is placed at a random position where (almost) all of it lies in the recipient's brain, and
the donor is flipped at random along each axis.

Written here rather than taken from a library: MONAI (1.x) and TorchIO have no lesion-pasting
transform; the method is a few array operations on the training cache's tensors.
"""

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

#: Range of lambda, in network voxels (2 mm at the shipped grid): the signed distance is 0 just outside the
#: lesion and -1 or less on it, so the region is the whole lesion with a rim of 0 to 3 voxels.
LAMBDA_RANGE = (-1.0, 3.0)
#: A placement is accepted when at least this share of the pasted brain voxels lands on the recipient's brain.
MIN_IN_BRAIN = 0.95
#: Placements tried before the sample is left unmixed.
TRIES = 20
#: Donors need at least this many tumour voxels (network grid) to be worth pasting.
MIN_DONOR_VOXELS = 64


@dataclass
class Donor:
    """A lesion ready to paste: the crops of image, class map and soft targets around it (margin of the
    largest lambda), the signed distance to its boundary and the donor's brain there."""
    name: str
    image: torch.Tensor      # (C, z, y, x)
    classes: torch.Tensor    # (1, z, y, x) uint8
    targets: torch.Tensor    # (3, z, y, x)
    distance: torch.Tensor   # (z, y, x) float32, negative inside the lesion
    brain: torch.Tensor      # (z, y, x) bool


def make_donor(name: str, image: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor) -> Optional[Donor]:
    """A :class:`Donor` from one case at the network grid, or None if it has too little tumour."""
    from scipy.ndimage import distance_transform_edt

    lesion = (classes[0] > 0).cpu().numpy()
    if lesion.sum() < MIN_DONOR_VOXELS:
        return None
    margin = int(np.ceil(LAMBDA_RANGE[1])) + 1
    where = np.nonzero(lesion)
    box = tuple(slice(max(int(w.min()) - margin, 0), min(int(w.max()) + margin + 1, n))
                for w, n in zip(where, lesion.shape))
    inside = lesion[box]
    distance = distance_transform_edt(~inside) - distance_transform_edt(inside)
    brain = (image[(slice(None),) + box] != 0).any(dim=0)
    return Donor(name, image[(slice(None),) + box].clone(), classes[(slice(None),) + box].clone(),
                 targets[(slice(None),) + box].clone(), torch.from_numpy(distance.astype(np.float32)).to(image.device),
                 brain)


def carve_mix(item: dict, donor: Donor, rng: np.random.RandomState) -> Optional[dict]:
    """``item`` (``image``, ``label`` class map, ``target`` soft regions, at the network grid) with
    ``donor``'s lesion pasted in; None when no placement fits in the recipient's brain (the caller then
    uses the item as it is). The result has no precomputed patch indices: the patch sampler recomputes
    them from the mixed label map."""
    lam = rng.uniform(*LAMBDA_RANGE)
    region = (donor.distance <= lam) & donor.brain  # lam >= -1: always the whole lesion (distance <= -1)
    flips = [d for d in (0, 1, 2) if rng.rand() < 0.5]
    image, classes, targets = donor.image, donor.classes, donor.targets
    if flips:
        region = torch.flip(region, flips)
        image, classes, targets = (torch.flip(t, [d + 1 for d in flips]) for t in (image, classes, targets))
    size = region.shape
    shape = item["label"].shape[1:]
    if any(s > n for s, n in zip(size, shape)):
        return None
    recipient_brain = (item["image"] != 0).any(dim=0)
    pasted = region.sum()
    for _ in range(TRIES):
        corner = [rng.randint(0, n - s + 1) for s, n in zip(size, shape)]
        box = tuple(slice(c, c + s) for c, s in zip(corner, size))
        if (recipient_brain[box] & region).sum() >= MIN_IN_BRAIN * pasted:
            break
    else:
        return None
    out = {"image": item["image"].clone(), "label": item["label"].clone(), "target": item["target"].clone()}
    for key, source in (("image", image), ("label", classes), ("target", targets)):
        view = out[key][(slice(None),) + box]
        view[:, region] = source[:, region].to(view.dtype)
    return out


def donors_from(items: List[dict], names: List[str]) -> List[Donor]:
    """Donors among the sampler's cases: real labelled tumours only (not the synthetic demo-style studies)."""
    donors = []
    for item, name in zip(items, names):
        if name.startswith("Synthetic_"):
            continue
        donor = make_donor(name, item["image"].float(), item["label"], item["target"].float())
        if donor is not None:
            donors.append(donor)
    return donors
