"""Inference speed of denoisers against a same-run convolution roofline.

torch only (never dask). The roofline reference is a large 3×3 convolution
timed in the same process, so machine noise cancels in the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowdose.models.receptive import flops_per_frame


def _time(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # warm-up: allocator, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
    }


def conv_roofline(channels: int = 64, size_px: int = 256, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of one large bias-free 3×3 convolution (the reference bound on this machine)."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.rand(1, channels, size_px, size_px)
    with torch.inference_mode():
        times = _time(lambda: conv(x), repeats)
    flops = 2 * channels * channels * 9 * size_px * size_px
    out = _summary(times)
    out["gflop_per_s"] = flops / out["median_s"] / 1e9
    return out


def model_speed(model: nn.Module, size_px: int, repeats: int = 3) -> dict[str, float]:
    """Seconds per ``size_px``² frame, counted FLOPs and achieved GFLOP/s (CPU, float32)."""
    model = model.eval()
    x = torch.rand(1, 1, size_px, size_px) * 0.9
    with torch.inference_mode():
        times = _time(lambda: model(x), repeats)
    out = _summary(times)
    flops = flops_per_frame(model, size=size_px)
    out["flops_per_frame"] = float(flops)
    out["gflop_per_s"] = flops / out["median_s"] / 1e9
    return out
