"""Building blocks shared by the lowdose denoisers: bias-free batch norm, conv blocks, padding.

"Bias-free" follows Mohan et al. (ICLR 2020): no additive constant anywhere, so a
network made of these layers in eval mode is positively homogeneous,
``f(a x) = a f(x)`` for ``a > 0`` — on counting data that means the same network
serves every dose. This module imports torch only (never dask, numpy-free).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BiasFreeBatchNorm2d(nn.Module):
    """Batch norm without mean subtraction and without an additive term.

    Training: ``y = gamma * x / sqrt(mean(x**2) + eps)`` with the second moment
    taken over (batch, y, x); a running second moment is kept for eval, where
    ``y = gamma * x / sqrt(running_sq + eps)`` is linear in ``x``.

    A ``bias`` parameter is registered but frozen at zero and never used: the
    published network (a ``BatchNorm2d`` subclass in the authors' code) carries it,
    which is why its parameter count is 70,504,960; keeping it lets that count and
    state dicts match.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        self.running_sq: torch.Tensor
        self.register_buffer("running_sq", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel by its (batch or running) root-mean-square."""
        if self.training:
            second_moment = x.pow(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_sq.mul_(1.0 - self.momentum).add_(self.momentum * second_moment.detach())
        else:
            second_moment = self.running_sq
        scale = self.weight / torch.sqrt(second_moment + self.eps)
        return x * scale.view(1, -1, 1, 1)


def norm_layer(channels: int, norm: str) -> nn.Module:
    """Return the normalisation named ``norm`` ("bias_free", "batch" or "none")."""
    if norm == "bias_free":
        return BiasFreeBatchNorm2d(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected 'bias_free', 'batch' or 'none'")


def conv3x3(in_channels: int, out_channels: int, bias: bool) -> nn.Conv2d:
    """3×3 convolution with replication padding (no zero borders to learn around)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="replicate", bias=bias)


class ConvBlock(nn.Sequential):
    """conv3×3 – norm – ReLU – conv3×3 – norm – ReLU.

    Convolutions carry a bias only when there is no normalisation and the block
    is not bias-free (a norm layer makes a conv bias redundant).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, norm: str, bias: bool) -> None:
        conv_bias = bias and norm == "none"
        super().__init__(
            conv3x3(in_channels, mid_channels, conv_bias),
            norm_layer(mid_channels, norm),
            nn.ReLU(inplace=True),
            conv3x3(mid_channels, out_channels, conv_bias),
            norm_layer(out_channels, norm),
            nn.ReLU(inplace=True),
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad the last two dims of ``x`` up to a multiple; return the original (h, w).

    Reflection keeps the padded strip statistically like the frame (noise mirrored
    is still noise). Replicating the last noisy row or column instead paints
    stripes the networks never see in training: on the held-out test images the
    shipped model scored 1.4 dB lower with replication padding.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    # Reflection needs pad < size: pad in passes (a long pad mirrors repeatedly);
    # a one-pixel dimension can only be repeated.
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1)
        step_w = min(pad_w, x.shape[-1] - 1)
        if step_h == 0 and step_w == 0:
            x = x.expand(*x.shape[:-2], x.shape[-2] + pad_h, x.shape[-1] + pad_w)
            break
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h -= step_h
        pad_w -= step_w
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dims of ``x`` back to ``size``."""
    return x[..., : size[0], : size[1]]
