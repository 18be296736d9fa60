"""Receptive field and FLOPs of a denoiser, measured from the model itself.

``receptive_field`` back-propagates from the centre output pixel and measures
the extent of the non-zero input gradient; ``flops_per_frame`` counts
multiply–adds of every conv layer with forward hooks. torch only.
"""

from __future__ import annotations

import torch
from torch import nn


def receptive_field(model: nn.Module, size: int = 1024, threshold: float = 0.0) -> int:
    """Width in pixels of the region that influences the centre output pixel.

    Parameters
    ----------
    model
        Any denoiser mapping (1, 1, H, W) to (1, 1, H, W).
    size
        Side of the probe image; the result saturates at ``size``.
    threshold
        Gradient magnitudes ≤ this are treated as zero.

    Notes
    -----
    Runs in eval mode on a positive random input (so ReLUs are mostly active)
    and returns the larger of the horizontal and vertical extents of the
    non-zero gradient of the centre output pixel.
    """
    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(0)
        x = (torch.rand(1, 1, size, size, generator=generator) + 0.5).to(device).requires_grad_(True)
        out = model(x)
        out[0, 0, size // 2, size // 2].backward()
        assert x.grad is not None
        mask = x.grad[0, 0].abs() > threshold
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        cols = torch.nonzero(mask.any(dim=0)).flatten()
        if rows.numel() == 0:
            return 0
        return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
    finally:
        model.train(was_training)


def flops_per_frame(model: nn.Module, size: int = 1024) -> int:
    """Floating-point operations (2 × multiply–adds) of conv layers for one ``size``² frame.

    Counted with forward hooks on every ``Conv2d`` from the real output shapes,
    so padding to a multiple and reduced-resolution paths are accounted for.
    Element-wise ops (ReLU, norm, pooling) are not counted.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * kernel * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
