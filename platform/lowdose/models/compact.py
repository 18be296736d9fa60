"""``compact``: the default lowdose denoiser, a U-Net run at reduced resolution.

Frames at 0.061 Å/px are heavily oversampled (information limit ≈ 12 px, atomic
columns ≈ 30 px apart), so a :class:`~torch.nn.PixelUnshuffle` front end folds
each ``unshuffle × unshuffle`` block of pixels into channels *losslessly* and
the whole U-Net runs on a grid ``unshuffle²`` times smaller; a 1×1 head and a
:class:`~torch.nn.PixelShuffle` put the full resolution back. Every 3×3 conv at
level ``l`` then spans ``3·unshuffle·2**l`` input pixels, which buys a receptive
field of several hundred pixels for a few GFLOPs per 1024² frame.

Bias-free by default (no conv biases, no norm): the network is exactly
positively homogeneous, so one model serves every dose, and with no batch
statistics data-parallel training is identical to single-process training with
the same global batch. torch only; never import dask here.
"""

from __future__ import annotations

import torch
from torch import nn

from lowdose.models.layers import crop_to, pad_to_multiple
from lowdose.models.unet import UNetCore


def compact_widths(scales: int, base_channels: int, max_channels: int) -> list[int]:
    """Level widths: ``b, 2b, 4b, ...`` capped at ``max_channels``; bottleneck repeats the last."""
    widths = [min(base_channels * 2**level, max_channels) for level in range(scales)]
    return [*widths, widths[-1]]


class CompactUNet(nn.Module):
    """Pixel-unshuffle → U-Net at reduced resolution → pixel-shuffle.

    Parameters
    ----------
    unshuffle
        Down-folding factor of the front end (4: a 1024² frame becomes 16 × 256²).
    scales
        Down-sampling steps of the inner U-Net.
    base_channels, max_channels
        Inner U-Net widths ``b, 2b, 4b, ...`` capped at ``max_channels``.
    norm
        ``"none"`` (default: bias-free, no batch statistics), ``"bias_free"`` or ``"batch"``.
    bias
        Conv biases (only with ``norm="none"``); False keeps the network homogeneous.
    """

    def __init__(
        self,
        unshuffle: int = 4,
        scales: int = 4,
        base_channels: int = 32,
        max_channels: int = 128,
        norm: str = "none",
        bias: bool = False,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.scales = scales
        folded = in_channels * unshuffle**2
        self.fold = nn.PixelUnshuffle(unshuffle)
        self.core = UNetCore(folded, folded, compact_widths(scales, base_channels, max_channels), norm, bias)
        self.unfold = nn.PixelShuffle(unshuffle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (batch, channels, height, width); any height/width."""
        padded, size = pad_to_multiple(x, self.unshuffle * 2**self.scales)
        out: torch.Tensor = self.unfold(self.core(self.fold(padded)))
        return crop_to(out, size)
