"""Training throughput: patches streamed from zarr vs the same loop fed from memory.

:func:`train_benchmark` runs the trainer's inner loop (zero_grad, forward, MSE,
backward, Adam step) twice over the *same* batches: once fed by
:class:`~lowdose.training.sampler.PatchSampler` reading, augmenting and noising
patches from the zarr store in background threads, as ``lowdose train`` does,
and once from those batches already materialised as in-memory tensors. The
ratio of the two is the cost of streaming. Repeats alternate between the two
feeds so that a change of machine load hits both. torch/numpy/zarr; never dask.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lowdose.models.bench import summary
from lowdose.training.sampler import Augmentation, PatchSampler


def write_clean_store(
    path: str | Path, n_images: int, size_px: int, seed: int = 0, *, tiled: bool = True
) -> Path:
    """A minimal SimulationSet-like store: a ``clean`` (image, y, x) float32 array.

    Chunked as a new SimulationSet (one image × 256² tiles,
    :func:`~lowdose.store.simulation_set.clean_chunks`), or one whole image per
    chunk as stores made before the tiling (``tiled=False``); compressed with the
    SimulationSet's codecs (zstd level 0 + crc32c), so reads cost what they cost
    on a real store. Images are a lattice of Gaussian columns on a smooth
    background with a random offset.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    from lowdose.store.integrity import checksum_codecs
    from lowdose.store.simulation_set import clean_chunks

    path = Path(path)
    rng = np.random.default_rng(seed)
    array = zarr.create_array(
        store=str(path),
        name="clean",
        shape=(n_images, size_px, size_px),
        chunks=clean_chunks((size_px, size_px)) if tiled else (1, size_px, size_px),
        dtype="float32",
        compressors=checksum_codecs(ZstdCodec(level=0)),
        overwrite=True,
    )
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32)
    for i in range(n_images):
        dy, dx = rng.uniform(0, 30, 2)
        columns = np.cos(2 * np.pi * (yy + dy) / 30) * np.cos(2 * np.pi * (xx + dx) / 30)
        array[i] = (0.45 * (1.0 + 0.3 * columns) + rng.normal(0, 0.01, (size_px, size_px))).astype(np.float32)
    return path


def _train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[int, torch.Tensor, torch.Tensor]],
) -> tuple[int, float, float]:
    """The trainer's inner loop; returns (samples, wall seconds, process CPU seconds)."""
    samples = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for _step, noisy, clean in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(noisy), clean)
        loss.backward()
        optimizer.step()
        samples += noisy.shape[0]
    return samples, time.perf_counter() - start, time.process_time() - start_cpu


def train_benchmark(
    store: str | Path,
    *,
    model: str = "compact",
    model_options: dict[str, Any] | None = None,
    patch_size: int = 256,
    batch_size: int = 8,
    steps: int = 8,
    repeats: int = 3,
    prefetch: int = 4,
    loader_threads: int = 1,
    torch_threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Samples/s of the training loop streaming from ``store`` vs fed from memory.

    Parameters
    ----------
    store
        A SimulationSet (or :func:`write_clean_store`) with a ``clean`` array.
    model, model_options
        The denoiser (default: the shipped default's architecture).
    patch_size, batch_size, prefetch, loader_threads, torch_threads
        As in the training config (``train-default.yaml``).
    steps
        Optimiser steps per repeat (one extra untimed warm-up step per feed).
    repeats
        Timed repeats of each feed, alternating.

    Returns
    -------
    dict
        ``streaming_samples_per_s`` and ``in_memory_samples_per_s`` (median and
        spread over repeats), ``ratio`` (streaming / in-memory, per repeat pair),
        ``sampler_s_per_batch`` (making one batch in the foreground: what the
        prefetch threads must hide) and its CPU time per sample
        (``sampler_cpu_s_per_sample``), the process CPU s/sample of both feeds
        and their ratio, and the run's shape.
    """
    from lowdose.models.registry import build
    from lowdose.training.sampler import open_clean_array

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        n_images = int(open_clean_array(store).shape[0])
        torch.manual_seed(seed)
        net = build(
            model, **(model_options or {"unshuffle": 4, "scales": 4, "base_channels": 16, "max_channels": 64})
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        sampler = PatchSampler(
            store,
            np.arange(n_images),
            patch_size,
            batch_size,
            dose_scale=1.0,
            seed=seed,
            augmentation=Augmentation(),
            prefetch=prefetch,
            threads=loader_threads,
        )
        # Warm up both paths (allocator, kernels, zarr/codec imports); not timed.
        _train_steps(net, optimizer, sampler.iterate(0, 1))
        sampler_times, sampler_cpu = [], []
        for step in range(1, 4):
            t0, c0 = time.perf_counter(), time.thread_time()
            sampler.batch(step)
            sampler_times.append(time.perf_counter() - t0)
            sampler_cpu.append((time.thread_time() - c0) / batch_size)
        streaming, in_memory, ratios, cpu_str, cpu_mem = [], [], [], [], []
        for repeat in range(repeats):
            first = 1 + repeat * steps
            batches = [(s, *sampler.batch(s)) for s in range(first, first + steps)]
            n_mem, t_mem, c_mem = _train_steps(net, optimizer, batches)
            del batches
            n_str, t_str, c_str = _train_steps(net, optimizer, sampler.iterate(first, first + steps))
            cpu_mem.append(c_mem / n_mem)
            cpu_str.append(c_str / n_str)
            streaming.append(n_str / t_str)
            in_memory.append(n_mem / t_mem)
            ratios.append(streaming[-1] / in_memory[-1])
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "model": model,
        "patch_size": patch_size,
        "batch_size": batch_size,
        "steps_per_repeat": steps,
        "prefetch": prefetch,
        "loader_threads": loader_threads,
        "torch_threads": torch_threads,
        "store_images": n_images,
        "streaming_samples_per_s": summary(streaming),
        "in_memory_samples_per_s": summary(in_memory),
        "ratio": summary(ratios),
        "sampler_s_per_batch": summary(sampler_times),
        # CPU seconds of the calling thread per sample while making those batches
        # (read, resample, noise): the work a loader thread adds to each sample.
        "sampler_cpu_s_per_sample": summary(sampler_cpu),
        # CPU seconds per sample of the whole process (loader threads included):
        # what streaming costs in work, whatever else runs on the machine.
        "streaming_cpu_s_per_sample": summary(cpu_str),
        "in_memory_cpu_s_per_sample": summary(cpu_mem),
        "cpu_ratio": summary([m / s for m, s in zip(cpu_mem, cpu_str, strict=True)]),
    }
