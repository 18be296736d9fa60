"""Blind-spot U-Net (Laine et al. 2019 style): self-supervised, trained on noisy frames alone.

Each of four branches sees the image rotated by 0/90/180/270°, and inside a
branch every layer only looks *upwards*: 3×3 convs are shifted so an output row
sees its own row and the rows above, max-pooling is preceded by a one-row
downward shift, up-sampling is nearest-neighbour, and the branch output is
finally shifted down one more row, so a branch at pixel (i, j) sees only rows
``< i``. Rotated back and combined by 1×1 convs, the four half-planes cover
everything except the pixel itself: the output at a pixel provably does not
depend on that pixel's input, so the network can be trained with an L2 loss
against the noisy input itself (Poisson noise is pixel-independent).

Zero padding only (replicated borders would copy a pixel into the rows above
it) and no batch statistics (they would leak a pixel into its own output).
torch only; never import dask here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shift_down(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Shift content down by ``rows`` (zeros enter at the top)."""
    return F.pad(x, (0, 0, rows, 0))[..., : x.shape[-2], :]


class ShiftedConv2d(nn.Conv2d):
    """k×k conv whose output row sees only its own and earlier rows."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad k−1 rows on top and k//2 columns each side, then convolve."""
        k = self.kernel_size[0]
        x = F.pad(x, (k // 2, k // 2, k - 1, 0))
        return super().forward(x)


class _Block(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ShiftedConv2d(in_channels, out_channels),
            nn.LeakyReLU(0.1, inplace=True),
            ShiftedConv2d(out_channels, out_channels),
            nn.LeakyReLU(0.1, inplace=True),
        )


class _UpwardUNet(nn.Module):
    """A U-Net whose output row i depends on input rows ≤ i only."""

    def __init__(self, in_channels: int, width: int, scales: int) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            [_Block(in_channels if level == 0 else width, width) for level in range(scales + 1)]
        )
        self.decoder = nn.ModuleList([_Block(2 * width, width) for _ in range(scales)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for level, block in enumerate(self.encoder):
            if level > 0:
                # The shift keeps a pooled row from seeing the row below its top row.
                h = F.max_pool2d(shift_down(h), 2)
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        return h


class BlindSpotUNet(nn.Module):
    """Blind-spot denoiser: four rotated upward-looking U-Nets fused by 1×1 convs.

    Parameters
    ----------
    scales
        Down-sampling steps of each branch.
    width
        Feature width of each branch.
    in_channels
        Input channels.
    """

    def __init__(self, scales: int = 4, width: int = 48, in_channels: int = 1) -> None:
        super().__init__()
        self.scales = scales
        self.branch = _UpwardUNet(in_channels, width, scales)
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * width, 2 * width, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(2 * width, in_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` (batch, channels, H, W); output at a pixel ignores that pixel."""
        height, width = x.shape[-2:]
        side = max(height, width)
        multiple = 2**self.scales
        side += (-side) % multiple
        # Zero-pad to a square multiple so the four rotations stack in one batch.
        padded = F.pad(x, (0, side - width, 0, side - height))
        rotations = torch.cat([torch.rot90(padded, k, dims=(-2, -1)) for k in range(4)], dim=0)
        features = shift_down(self.branch(rotations))
        n = x.shape[0]
        unrotated = [torch.rot90(features[k * n : (k + 1) * n], -k, dims=(-2, -1)) for k in range(4)]
        out: torch.Tensor = self.fuse(torch.cat(unrotated, dim=1))
        return out[..., :height, :width]
