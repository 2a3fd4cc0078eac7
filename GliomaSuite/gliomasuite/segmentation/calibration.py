"""Fix a V-Net's normalisation statistics from a training cohort (``norm="cohort"``, see :mod:`.vnet`).

A network trained with instance normalisation normalises each feature map by the statistics of the
input at hand. That is harmless while every input holds a tumour, and harmful when none does: the
feature maps that respond to tumour are then nearly flat, instance normalisation stretches them to
unit variance, and the network reports tumour in healthy tissue. (Measured: on brains made tumour-free
by mirroring a healthy hemisphere, see :mod:`.negatives`, ``vnet-brats-v1`` found 57-294 cm3 of
"tumour"; fed the normalisation statistics of the same patient's tumour-bearing scan, 0.9 cm3:
``tools/diagnose_normalisation.py``.)

:func:`calibrate` runs the trained network over whole prepared studies exactly as inference does
(same pooling, padding and single whole-brain window), records every normalisation layer's
per-channel mean and variance for each study, and stores their cohort mean and pooled variance
(mean over studies of ``var_i + (mean_i - mean)^2``) as the layers' running statistics. The
result is the same weights with ``norm="cohort"``: in evaluation mode every study is normalised
alike, as batch normalisation does at inference. Calibrate on the network's own training cases only,
so that no evaluation case informs the model.
"""

from typing import Callable, Iterable, Optional

import numpy as np
import torch

from .vnet import VNet


def calibrate(model: VNet, arrays: Iterable[np.ndarray], device: Optional[torch.device] = None,
              log: Callable[[str], None] = lambda message: None) -> VNet:
    """A copy of ``model`` with ``norm="cohort"`` and running statistics from ``arrays`` (prepared
    studies, float32 (4, z, y, x), as :func:`gliomasuite.preprocess.prepare` makes them)."""
    from .inference import predict_probabilities

    device = device or torch.device("cpu")
    model = model.to(device).eval()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    if any(m.track_running_stats for m in layers):
        raise ValueError("this network already uses fixed normalisation statistics")
    means = {id(m): [] for m in layers}
    variances = {id(m): [] for m in layers}

    def record(module, inputs):
        x = inputs[0].float()
        means[id(module)].append(x.mean(dim=(2, 3, 4))[0].double().cpu())
        variances[id(module)].append(x.var(dim=(2, 3, 4), unbiased=False)[0].double().cpu())

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    count = 0
    try:
        for array in arrays:
            predict_probabilities(model, array, device)
            count += 1
            log(f"calibrated on study {count}")
    finally:
        for h in hooks:
            h.remove()
    if count == 0:
        raise ValueError("no studies to calibrate on")
    config = dict(model.config, norm="cohort")
    calibrated = VNet(**config)
    missing, unexpected = calibrated.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in missing):
        raise ValueError(f"cannot carry the weights over (missing {missing}, unexpected {unexpected})")
    target = [m for m in calibrated.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    for source, layer in zip(layers, target):
        m = torch.stack(means[id(source)])           # (studies, channels)
        v = torch.stack(variances[id(source)])
        mean = m.mean(dim=0)
        layer.running_mean.copy_(mean.float())
        layer.running_var.copy_((v + (m - mean) ** 2).mean(dim=0).float())
        layer.num_batches_tracked.fill_(count)
    calibrated.input_downsample = getattr(model, "input_downsample", 1)
    calibrated.optional_modalities = getattr(model, "optional_modalities", ())
    return calibrated.eval()
