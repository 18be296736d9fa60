"""Inference speed of denoisers against a same-run roofline.

torch only (never dask). The roofline references are timed in the same process
at the same thread count, so machine noise largely cancels in the ratios:

* a large bias-free 3×3 convolution (the operation the denoisers consist of), at
  a few channel widths, the best of which is the reference;
* a square float32 matmul (what the convolutions lower to in oneDNN/cuDNN).

FLOPs are counted from the model itself with forward hooks
(:func:`lowdose.models.receptive.flops_per_frame`), on the ``meta`` device when
the model allows it, so counting a 2 TFLOP frame costs no arithmetic.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lowdose.models.receptive import flops_per_frame


def summary(values: list[float]) -> dict[str, float]:
    """Median of ``values`` with its spread (min, max, max − min) and the number of repeats."""
    if not values:
        raise ValueError("summary: no values")
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "spread": float(max(values) - min(values)),
        "repeats": len(values),
    }


def time_calls(
    fn: Callable[[], Any], repeats: int, *, warmup: bool = True
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of ``repeats`` calls of ``fn`` (after one warm-up call).

    CPU seconds do not count time the process waited for a core, so on a shared
    machine they show what the code costs when the wall clock does not.
    """
    if warmup:
        fn()  # allocator, kernel selection
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return wall, cpu


def count_flops(model: nn.Module, size_px: int) -> int:
    """FLOPs (2 × multiply–adds of every conv) of one ``size_px``² frame, counted with hooks.

    Runs the hooks on a ``meta``-device copy (shapes only, no arithmetic); falls
    back to a real forward pass if an operation of the model has no meta kernel.
    """
    try:
        meta = copy.deepcopy(model).to("meta")
        return flops_per_frame(meta, size=size_px)
    except (NotImplementedError, RuntimeError):
        return flops_per_frame(model, size=size_px)


def _rate(flops: float, times: tuple[list[float], list[float]]) -> dict[str, float]:
    wall, cpu = times
    out = {f"{k}_s" if k != "repeats" else k: v for k, v in summary(wall).items()}
    # GFLOP/s of the median time, with its spread from the fastest and slowest repeats.
    out["gflop_per_s"] = flops / out["median_s"] / 1e9
    out["gflop_per_s_min"] = flops / out["max_s"] / 1e9
    out["gflop_per_s_max"] = flops / out["min_s"] / 1e9
    out["cpu_median_s"] = float(statistics.median(cpu))
    out["cpu_gflop_per_s"] = flops / max(out["cpu_median_s"], 1e-12) / 1e9
    out["flops"] = float(flops)
    return out


def conv_roofline(
    channels: tuple[int, ...] = (64, 128),
    size_px: int = 256,
    repeats: int = 5,
    layouts: tuple[str, ...] = ("contiguous", "channels_last"),
) -> dict[str, Any]:
    """GFLOP/s of large bias-free 3×3 convolutions; ``best`` (over widths and layouts) is the bound.

    Each width is timed in each memory layout (oneDNN is much faster in channels_last on
    some CPUs), so the bound is never easier than what a model run in either layout could
    reach. ``channels`` keys are ``"<width>"`` for the contiguous layout and
    ``"<width>_channels_last"``; wall-clock and CPU-time bests are taken separately.
    """
    per_width: dict[str, Any] = {}
    with torch.inference_mode():
        for layout in layouts:
            memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            for width in channels:
                conv = nn.Conv2d(width, width, 3, padding=1, bias=False).to(memory_format=memory_format)  # type: ignore[call-overload]
                x = torch.rand(1, width, size_px, size_px).contiguous(memory_format=memory_format)
                flops = 2 * width * width * 9 * size_px * size_px
                key = str(width) if layout == "contiguous" else f"{width}_{layout}"
                per_width[key] = _rate(flops, time_calls(lambda: conv(x), repeats))  # noqa: B023
                per_width[key]["layout"] = layout
    best = max(per_width, key=lambda k: per_width[k]["gflop_per_s"])
    best_cpu = max(per_width, key=lambda k: per_width[k]["cpu_gflop_per_s"])
    return {
        "size_px": size_px,
        "channels": per_width,
        "best_channels": int(best.split("_")[0]),
        "best_layout": per_width[best]["layout"],
        "best_cpu": best_cpu,
        "gflop_per_s": per_width[best]["gflop_per_s"],
        "cpu_gflop_per_s": per_width[best_cpu]["cpu_gflop_per_s"],
    }


def paired_fraction(
    model: nn.Module,
    size_px: int,
    roofline: dict[str, Any],
    flops: int,
    *,
    batch: int = 1,
    pairs: int = 7,
    channels_last: bool = True,
) -> dict[str, Any]:
    """Model GFLOP/s as a fraction of the conv roofline, timed in alternation (same moments).

    One call of the model on a ``batch × size_px²`` input, then one call of the roofline's
    best conv (its width and layout from ``roofline``, wall-clock and CPU-time bests
    separately), ``pairs`` times; the fraction of each pair is taken and the median of
    those is reported, with its spread. On a shared machine the load changes from second
    to second; pairing cancels most of that, where two separate medians would not.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.rand(batch, 1, size_px, size_px) * 0.9).contiguous(memory_format=memory_format)
    size = roofline["size_px"]

    def reference(key: str) -> tuple[Callable[[], Any], int]:
        entry = roofline["channels"][key]
        width = int(key.split("_")[0])
        fmt = torch.channels_last if entry["layout"] == "channels_last" else torch.contiguous_format
        conv = nn.Conv2d(width, width, 3, padding=1, bias=False).to(memory_format=fmt)  # type: ignore[call-overload]
        data = torch.rand(1, width, size, size).contiguous(memory_format=fmt)
        return (lambda: conv(data)), 2 * width * width * 9 * size * size

    best_wall = max(roofline["channels"], key=lambda k: roofline["channels"][k]["gflop_per_s"])
    ref_wall, ref_wall_flops = reference(best_wall)
    ref_cpu, ref_cpu_flops = reference(roofline["best_cpu"])
    wall_fractions, cpu_fractions, model_wall, model_cpu = [], [], [], []
    with torch.inference_mode():
        model(x)
        ref_wall()
        ref_cpu()
        for _ in range(pairs):
            (mw,), (mc,) = time_calls(lambda: model(x), 1, warmup=False)
            (rw,), _ = time_calls(ref_wall, 1, warmup=False)
            _, (rc,) = time_calls(ref_cpu, 1, warmup=False)
            model_wall.append(mw)
            model_cpu.append(mc)
            wall_fractions.append((flops * batch / mw) / (ref_wall_flops / rw))
            cpu_fractions.append((flops * batch / max(mc, 1e-9)) / (ref_cpu_flops / max(rc, 1e-9)))
    return {
        "batch": batch,
        "size_px": size_px,
        "reference_wall": best_wall,
        "reference_cpu": roofline["best_cpu"],
        "fraction": summary(wall_fractions),
        "cpu_fraction": summary(cpu_fractions),
        "s_per_frame": summary([t / batch for t in model_wall]),
        "cpu_s_per_frame": summary([t / batch for t in model_cpu]),
    }


def matmul_roofline(n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of an ``n × n`` float32 matmul (the GEMM the convolutions lower to)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    with torch.inference_mode():
        out = _rate(2 * n**3, time_calls(lambda: a @ b, repeats))
    out["n"] = n
    return out


def model_speed(
    model: nn.Module,
    size_px: int,
    repeats: int = 3,
    *,
    flops: int | None = None,
    warmup_px: int | None = None,
    device: str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Seconds per ``size_px``² frame (batch 1), counted FLOPs and achieved GFLOP/s.

    Parameters
    ----------
    flops
        FLOPs per frame if already counted (else counted here).
    warmup_px
        Warm up on a frame of this side instead of ``size_px`` (big models: one
        warm-up at full size would cost as much as a repeat).
    device, amp_dtype, channels_last
        CUDA code path: autocast to ``amp_dtype`` (bfloat16/float16) and the
        channels-last memory format; on CPU leave the defaults.
    """
    model = model.eval().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
    x = (torch.rand(1, 1, size_px, size_px) * 0.9).to(device).contiguous(memory_format=memory_format)
    autocast = (
        torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype)
        if amp_dtype is not None
        else torch.autocast(device_type="cpu", enabled=False)
    )
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run() -> None:
        with torch.inference_mode(), autocast:
            model(x)
        sync()

    if warmup_px is not None and warmup_px != size_px:
        small = torch.rand(1, 1, warmup_px, warmup_px).to(device).contiguous(memory_format=memory_format)
        with torch.inference_mode(), autocast:
            model(small)
        times = time_calls(run, repeats, warmup=False)
    else:
        times = time_calls(run, repeats)
    counted = count_flops(model.to("cpu"), size_px) if flops is None else flops
    model.to(device)
    return _rate(float(counted), times)
