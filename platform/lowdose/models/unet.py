"""The paper's U-Net denoiser (Vincent et al. 2021), configurable in depth and width.

Encoder: one block at full resolution, then ``scales`` times max-pool 2 + block;
the block after the last pool is the bottleneck. Decoder: ``scales`` times
bilinear up ×2, concatenate the skip of that resolution, block. 1×1 conv out.

Widths (the authors' code, not the paper's text): with base width ``b`` the
encoder levels are ``b, b, b, 2b, 4b, 8b`` and the bottleneck ``8b`` (6 scales).
For other depths we keep the rule that generates this list — the first three
levels stay at ``b``, each further level doubles, capped at ``8b``; the bottleneck
repeats the deepest encoder width — so 4 scales give ``b, b, b, 2b`` + ``2b``.
Each decoder block maps ``concat(up, skip)`` (2·w) to ``w`` (the skip width) and
then to the width of the next-shallower level, giving decoder widths
``4b, 2b, b, b, b, b`` for 6 scales. With ``b = 128``, 6 scales and bias-free
norm this has exactly 70,504,960 parameters (the published count, which
includes the frozen unused bias of each bias-free norm; see
:class:`~lowdose.models.layers.BiasFreeBatchNorm2d`).

torch only; never import dask or numpy here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowdose.models.layers import ConvBlock, crop_to, pad_to_multiple


def level_widths(scales: int, base_channels: int) -> list[int]:
    """Encoder widths per level, then the bottleneck width (``scales + 1`` entries)."""
    widths = [base_channels * min(2 ** max(level - 2, 0), 8) for level in range(scales)]
    return [*widths, widths[-1]]


class UNetCore(nn.Module):
    """Encoder–decoder with concatenated skips over explicit level widths.

    ``widths`` has ``scales + 1`` entries (encoder levels, then the bottleneck);
    the input's height and width must be multiples of ``2**scales``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, widths: list[int], norm: str, conv_bias: bool
    ) -> None:
        super().__init__()
        self.scales = len(widths) - 1
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(ConvBlock(previous, width, width, norm, bias=conv_bias))
            previous = width
        self.decoder = nn.ModuleList()
        current = widths[-1]
        for level in reversed(range(self.scales)):
            skip = widths[level]
            out = widths[level - 1] if level > 0 else widths[0]
            self.decoder.append(ConvBlock(current + skip, skip, out, norm, bias=conv_bias))
            current = out
        self.head = nn.Conv2d(current, out_channels, 1, bias=conv_bias and norm == "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, in, H, W) to (batch, out, H, W); H and W multiples of ``2**scales``."""
        skips = []
        h = x
        for level, block in enumerate(self.encoder):
            if level > 0:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        out: torch.Tensor = self.head(h)
        return out


class UNet(nn.Module):
    """The paper's U-Net denoiser: counts in, expected counts out.

    Parameters
    ----------
    scales
        Number of 2× down-sampling steps (6 in the paper).
    base_channels
        Base width ``b`` (128 in the paper).
    bias_free
        Bias-free batch norm (no mean subtraction, no additive term) if True,
        ordinary batch norm otherwise.
    residual
        Predict ``x + f(x)`` instead of ``f(x)`` (direct prediction is the default).
    in_channels
        Input channels (1 for single frames).
    widths
        Explicit level widths (``scales + 1`` entries) instead of the paper's rule.

    Examples
    --------
    >>> import torch
    >>> net = UNet(scales=2, base_channels=4).eval()
    >>> net(torch.zeros(1, 1, 13, 9)).shape
    torch.Size([1, 1, 13, 9])
    """

    def __init__(
        self,
        scales: int = 6,
        base_channels: int = 128,
        bias_free: bool = True,
        residual: bool = False,
        in_channels: int = 1,
        widths: list[int] | None = None,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError("scales must be >= 1")
        widths = list(widths) if widths is not None else level_widths(scales, base_channels)
        if len(widths) != scales + 1:
            raise ValueError(f"widths needs scales + 1 = {scales + 1} entries, got {len(widths)}")
        self.scales = scales
        self.residual = residual
        norm = "bias_free" if bias_free else "batch"
        self.core = UNetCore(in_channels, in_channels, widths, norm, conv_bias=not bias_free)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` of shape (batch, channels, height, width); any height/width."""
        padded, size = pad_to_multiple(x, 2**self.scales)
        out = self.core(padded)
        if self.residual:
            out = out + padded
        return crop_to(out, size)
