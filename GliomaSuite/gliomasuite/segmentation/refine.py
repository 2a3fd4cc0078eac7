"""1 mm refinement: a second network that redraws the 2 mm networks' regions at full resolution, only
around the tumour they found.

Why: the shipped networks see 2 mm voxels. Even a perfect 2 mm answer, upsampled, loses detail at 1 mm:
over the 25 cross-validation cases, the expert label maps pooled to 2 mm and interpolated back reach
mean Dice WT 0.97, TC 0.97 and only ET 0.89 against themselves (thin enhancing rims).
``tools/cross_validate_segmentation.py ceiling`` prints these figures.

What it is: a V-Net at 1 mm (:mod:`.vnet`, smaller) whose input is the four prepared images plus the
coarse region probabilities (WT, TC, ET; 7 channels) and whose output is a *correction* of the coarse
logits: refined logit = logit(coarse) + network output. Trained with its last layer starting at zero,
it starts as the coarse answer and learns only what the 1 mm images change about it.

Where it runs: on the box around the coarse whole tumour (probability > 0.5) grown by
:data:`MARGIN` voxels; outside it the coarse probabilities stand, so a brain the coarse networks found
empty stays empty and the cost follows the tumour's size. Several refiners (one per cross-validation
fold) are averaged as probabilities, as the ensemble's members are.

Measured, and not shipped: by the same 4-fold cross-validation as the default, a refiner per fold made
WT and TC slightly worse (WT -0.006, TC -0.009, ET +0.003; vnet-brats-cv4-v1.md has the commands and
intervals). No registered model uses one; ``train-segmentation --coarse`` trains one on your own data
and ``tools/cross_validate_segmentation.py register-refiners`` registers fold refiners as a model.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

#: Voxels (mm) added on every side of the coarse whole tumour's bounding box.
MARGIN = 12
#: Coarse probabilities are clipped to [EPS, 1 - EPS] before their logit is taken.
EPS = 1e-4
#: The refiner runs on windows of this many voxels a side (MONAI's sliding window, a quarter overlap,
#: Gaussian weights), the patch size it trained on: its instance normalisation then sees statistics of the
#: same extent as in training, not of the whole box.
WINDOW = 64
#: Channels of the refiner's input: the four prepared images, then the coarse WT, TC, ET probabilities.
IMAGE_CHANNELS = 4
COARSE_CHANNELS = 3


def coarse_logit(p: torch.Tensor) -> torch.Tensor:
    """The logit the refiner's output is added to (``p`` clipped to [EPS, 1 - EPS])."""
    p = p.float().clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


def tumour_box(wt: np.ndarray, margin: int = MARGIN, divisor: int = 1) -> Optional[Tuple[slice, ...]]:
    """Slices of the bounding box of ``wt`` grown by ``margin`` and then to a multiple of ``divisor`` (within
    the array where it can be; a box larger than the array is padded by the caller), or None when ``wt`` is
    empty."""
    if not wt.any():
        return None
    box = []
    for axis, size in enumerate(wt.shape):
        other = tuple(a for a in range(wt.ndim) if a != axis)
        hit = np.flatnonzero(wt.any(axis=other))
        lo, hi = max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, size)
        short = (-(hi - lo)) % divisor
        grow = min(short, size - hi)
        hi += grow
        lo = max(lo - (short - grow), 0)
        box.append(slice(lo, hi))
    return tuple(box)


def refine_probabilities(refiners: Sequence, array: np.ndarray, coarse: np.ndarray, device: torch.device,
                         margin: int = MARGIN, window: Optional[int] = WINDOW) -> np.ndarray:
    """Coarse region probabilities (3, z, y, x) refined at 1 mm around the tumour: a new array.

    ``refiners``: loaded refiner networks (or their ONNX Runtime twins, see
    :func:`.inference.network_for`); ``array``: the prepared images (4, z, y, x) the coarse probabilities
    were made from. Outside the box around the coarse whole tumour the coarse values are returned as they
    are. ``window``: the refiners run on windows of that size (None: on the whole box at once).
    """
    divisor = max(int(r.divisor) for r in refiners)
    box = tumour_box(coarse[0] > 0.5, margin, divisor)
    refined = coarse.copy()
    if box is None:
        return refined
    image = torch.from_numpy(np.ascontiguousarray(array[(slice(None),) + box]))
    prior = torch.from_numpy(np.ascontiguousarray(coarse[(slice(None),) + box]))
    x = torch.cat([image, prior.to(image.dtype)], dim=0)[None]
    shape = x.shape[-3:]
    pads = []
    for s in reversed(shape):
        pads += [0, (-s) % divisor]
    x = torch.nn.functional.pad(x, pads).to(device)
    base = coarse_logit(x[:, IMAGE_CHANNELS:])
    total = None
    with torch.inference_mode():
        for refiner in refiners:
            if isinstance(refiner, torch.nn.Module):
                refiner = refiner.to(device).eval()
            if window and any(n > window for n in x.shape[-3:]):
                from monai.inferers import sliding_window_inference

                correction = sliding_window_inference(x, [window] * 3, 1, refiner, overlap=0.25, mode="gaussian")
            else:
                correction = refiner(x)
            p = (correction.float() + base).sigmoid_()
            total = p if total is None else total + p
    total = (total / len(refiners))[0, :, : shape[0], : shape[1], : shape[2]]
    refined[(slice(None),) + box] = total.cpu().numpy()
    return refined
