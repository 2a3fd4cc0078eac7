"""V-Net: a compact, configurable volumetric encoder-decoder (Milletari, Navab and Ahmadi, 2016).

What is kept from the paper: every stage is a residual block (its input added to the output of its
convolutions), down-sampling is a strided 2x2x2 convolution rather than pooling, up-sampling a
transposed 2x2x2 convolution, and encoder features are concatenated into the decoder (skip
connections). What differs, and why: 3x3x3 kernels instead of 5x5x5 (about a fifth of the
arithmetic, so a whole case runs on a laptop CPU), instance normalisation (batch sizes of 2 make
batch statistics useless), and sigmoid outputs for the nested BraTS regions WT, TC, ET instead of a
softmax over labels. With ``deep_supervision`` the two decoder stages below full resolution also
emit region logits during training, as the Res-UNet seed recommends.

Normalisation, ``norm``: ``"instance"`` normalises every feature map by its own mean and variance
over the whole input, in training and inference alike. ``"cohort"`` trains the same way but, in
evaluation mode, uses fixed per-channel statistics measured once over a training cohort
(:mod:`gliomasuite.segmentation.calibration`), held as the layers' ``running_mean``/``running_var``
buffers. Why it matters: with per-input statistics a brain without tumour has its weak "tumour"
features stretched to unit variance and the network finds 60-290 cm3 of tumour in it; with the
cohort's statistics it finds none, and tumour core and enhancing tumour also segment better
(numbers in the model cards).

MONAI has a ``VNet`` too; it is fixed to 5x5x5 kernels, batch norm and 16 base channels, without
deep supervision, which is why this one is ours.
"""

from typing import List, Sequence, Union

import torch
from torch import nn


#: What ``norm`` may be (see the module's docstring).
NORMS = ("instance", "cohort")


def _norm(channels: int, norm: str) -> nn.InstanceNorm3d:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    return nn.InstanceNorm3d(channels, affine=True, track_running_stats=norm == "cohort")


def _norm_act(channels: int, norm: str) -> List[nn.Module]:
    return [_norm(channels, norm), nn.PReLU(channels)]


class ResidualStage(nn.Module):
    """``convs`` 3x3x3 convolutions with normalisation and PReLU, plus the (projected) input."""

    def __init__(self, in_channels: int, out_channels: int, convs: int, norm: str = "instance"):
        super().__init__()
        layers: List[nn.Module] = []
        for i in range(convs):
            layers.append(nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False))
            layers.append(_norm(out_channels, norm))
            if i < convs - 1:
                layers.append(nn.PReLU(out_channels))
        self.body = nn.Sequential(*layers)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class VNet(nn.Module):
    """Residual V-Net for BraTS regions.

    Example::

        net = VNet(in_channels=4, out_channels=3, channels=(16, 32, 64, 128, 192))
        logits = net(torch.zeros(1, 4, 128, 128, 128))   # (1, 3, 128, 128, 128): WT, TC, ET

    Spatial sizes must be divisible by ``2 ** (len(channels) - 1)``. In training mode with
    ``deep_supervision`` the forward returns a list: full-resolution logits first, then coarser ones.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128, 192),
        encoder_convs: Sequence[int] = (1, 2, 2, 2, 2),
        decoder_convs: Sequence[int] = (2, 2, 2, 1),
        deep_supervision: bool = True,
        norm: str = "instance",
    ):
        super().__init__()
        if len(encoder_convs) != len(channels) or len(decoder_convs) != len(channels) - 1:
            raise ValueError("encoder_convs needs one entry per level and decoder_convs one fewer")
        self.config = dict(
            in_channels=in_channels, out_channels=out_channels, channels=list(channels),
            encoder_convs=list(encoder_convs), decoder_convs=list(decoder_convs),
            deep_supervision=deep_supervision, norm=norm,
        )
        self.divisor = 2 ** (len(channels) - 1)
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        previous = in_channels
        for level, (c, n) in enumerate(zip(channels, encoder_convs)):
            self.encoder.append(ResidualStage(previous, c, n, norm))
            if level < len(channels) - 1:
                self.down.append(nn.Sequential(nn.Conv3d(c, channels[level + 1], 2, stride=2, bias=False),
                                               *_norm_act(channels[level + 1], norm)))
            previous = channels[level + 1] if level < len(channels) - 1 else c
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(channels) - 1)):
            c = channels[level]
            self.up.append(nn.Sequential(nn.ConvTranspose3d(channels[level + 1], c, 2, stride=2, bias=False),
                                         *_norm_act(c, norm)))
            self.decoder.append(ResidualStage(2 * c, c, decoder_convs[level], norm))
        # Region logits at full, 1/2 and 1/4 resolution; the coarser two only train (deep supervision).
        supervised = 3 if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv3d(channels[k], out_channels, 1) for k in range(supervised))

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        skips = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            if level < len(self.down):
                skips.append(x)
                x = self.down[level](x)
        outputs = []
        for i, (up, stage) in enumerate(zip(self.up, self.decoder)):
            x = stage(torch.cat([up(x), skips[-1 - i]], dim=1))
            outputs.append(x)
        if self.training and self.deep_supervision:
            # Full resolution first, then the coarser decoder stages (MONAI DeepSupervisionLoss order).
            return [head(outputs[-1 - k]) for k, head in enumerate(self.heads)]
        return self.heads[0](outputs[-1])
