"""The recurrent U-Net: a shared 3D encoder per visit, a convolutional GRU across visits, a decoder to
the next visit's tumour map, and the recurrence head (the VRU-Net seed, equations 2-5).

For visits x_1..x_T (each 10 channels, :mod:`gliomasuite.recurrence.inputs`), the shared encoder gives
bottleneck features e_t; the ConvGRU carries a state across them with 3x3x3 convolutions in place of
the matrices::

    z_t = sigmoid(W_z * e_t + U_z * h_{t-1})          update gate
    r_t = sigmoid(W_r * e_t + U_r * h_{t-1})          reset gate
    h~_t = tanh(W * e_t + U * (r_t . h_{t-1}))         candidate
    h_t = (1 - z_t) . h_{t-1} + z_t . h~_t

(one convolution of the concatenation [e_t, h] is W * e_t + U * h). The decoder upsamples h_T with
the latest visit's encoder features as skips to a logit map of tumour at the next visit, and the head
gives P(recurrence) = sigmoid(W_f pool(h_T) + b_f), pool being the mean and the maximum over space.
Written by hand because no library module has a 3D ConvGRU; the blocks are plain torch.
"""

from typing import Sequence, Tuple

import torch
from torch import nn

from .inputs import CHANNELS_PER_VISIT


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.1, inplace=True))


class ConvGRUCell(nn.Module):
    """A GRU whose gates are 3D convolutions (see the module docstring)."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv3d(in_channels + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv3d(in_channels + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor = None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros((x.shape[0], self.hidden) + x.shape[2:])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        h_tilde = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * h_tilde


class RecurrenceNet(nn.Module):
    """``forward(x)`` with x of shape (B, T, 10, Z, Y, X) returns (map logits (B, 1, Z, Y, X), recurrence logit (B,)).

    Spatial sizes must be divisible by 4. ``channels`` are the widths of the three resolutions.
    """

    def __init__(self, in_channels: int = CHANNELS_PER_VISIT, channels: Sequence[int] = (8, 16, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self.config = {"in_channels": int(in_channels), "channels": [int(c) for c in channels]}
        self.enc1 = _block(in_channels, c1)
        self.down1 = nn.Sequential(nn.Conv3d(c1, c2, 2, stride=2, bias=False), nn.InstanceNorm3d(c2, affine=True),
                                   nn.LeakyReLU(0.1, inplace=True))
        self.enc2 = _block(c2, c2)
        self.down2 = nn.Sequential(nn.Conv3d(c2, c3, 2, stride=2, bias=False), nn.InstanceNorm3d(c3, affine=True),
                                   nn.LeakyReLU(0.1, inplace=True))
        self.enc3 = _block(c3, c3)
        self.gru = ConvGRUCell(c3, c3)
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = _block(2 * c2, c2)
        self.up1 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = _block(2 * c1, c1)
        self.out = nn.Conv3d(c1, 1, 1)
        self.head = nn.Linear(2 * c3, 1)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.enc1(x)
        s2 = self.enc2(self.down1(s1))
        return s1, s2, self.enc3(self.down2(s2))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = None
        for t in range(x.shape[1]):
            s1, s2, e = self.encode(x[:, t])
            h = self.gru(e, h)
        d2 = self.dec2(torch.cat([self.up2(h), s2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], 1))
        pooled = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], 1)
        return self.out(d1), self.head(pooled)[:, 0]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


