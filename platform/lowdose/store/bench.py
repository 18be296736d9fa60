"""Measurements behind the FrameSeries storage choices: ingest speed and compression.

:func:`ingest_benchmark` writes a Poisson counts stack as a multi-page TIFF, times a
plain file copy of it and a full ``ingest`` of it, and compares the bytes on disk
with the Shannon entropy bound of Poisson counts. :func:`codec_comparison` measures
the Blosc variants that led to the chosen codec. ``lowdose bench ingest`` (owned by
the CLI) prints these. Imports numpy, scipy, numcodecs, tifffile; never torch.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def poisson_entropy_bits(mean_count: float) -> float:
    """Shannon entropy (bits) of one Poisson(``mean_count``) pixel, summed exactly.

    The sum runs to ``mean + 20 sqrt(mean) + 40``, beyond which the tail mass is
    below double precision.
    """
    from scipy.stats import poisson

    top = int(mean_count + 20 * np.sqrt(mean_count) + 40)
    probabilities = poisson.pmf(np.arange(top), mean_count)
    probabilities = probabilities[probabilities > 0]
    return float(-(probabilities * np.log2(probabilities)).sum())


def entropy_bound_ratio(mean_count: float, dtype: str = "uint8") -> float:
    """Best lossless compression ratio of i.i.d. Poisson counts stored as ``dtype``."""
    return 8 * np.dtype(dtype).itemsize / poisson_entropy_bits(mean_count)


def _poisson_stack(
    n_frames: int, frame_shape: tuple[int, int], mean_count: float, seed: int, dtype: str
) -> Any:
    """Yield frames; a pool of 64 distinct frames is cycled so 2 GB stacks are fast to make."""
    rng = np.random.default_rng(seed)
    pool = rng.poisson(mean_count, (min(64, n_frames), *frame_shape)).astype(dtype)
    for i in range(n_frames):
        yield pool[i % len(pool)]


def write_poisson_tiff(
    path: Path,
    n_frames: int,
    frame_shape: tuple[int, int],
    mean_count: float = 0.45,
    *,
    seed: int = 0,
    dtype: str = "uint8",
) -> Path:
    """Write a multi-page TIFF of Poisson counts page by page (bounded memory)."""
    import tifffile

    tifffile.imwrite(
        path,
        _poisson_stack(n_frames, frame_shape, mean_count, seed, dtype),
        shape=(n_frames, *frame_shape),
        dtype=dtype,
        bigtiff=n_frames * frame_shape[0] * frame_shape[1] * np.dtype(dtype).itemsize > 2**31,
        metadata={"pixel_size_A": 0.061, "frame_rate_hz": 40.0},
    )
    return path


def evict_from_page_cache(path: Path) -> bool:
    """Write ``path``'s dirty pages to disk and ask the kernel to drop it from the page cache.

    Returns False where that cannot be asked (no ``posix_fadvise``). On tmpfs the
    request is a no-op; the caller's read rate shows whether it took.
    """
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _timed_copy(source: Path, target: Path) -> float:
    started = time.perf_counter()
    shutil.copyfile(source, target)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def _timed_ingest(source: Path, store: Path) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of one ``ingest`` of ``source`` into a new ``store``."""
    from lowdose.store.ingest import ingest

    shutil.rmtree(store, ignore_errors=True)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    ingest([source], store)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return seconds, cpu_s


def _stored_bytes(store: Path, variable: str = "counts") -> int:
    folder = store / variable
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name != "zarr.json")


def ingest_benchmark(
    *,
    n_frames: int = 512,
    frame_shape: tuple[int, int] = (512, 512),
    mean_count: float = 0.45,
    dtype: str = "uint8",
    workdir: str | Path | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Time ingest of a Poisson TIFF stack against a plain copy; measure compression.

    Parameters
    ----------
    n_frames, frame_shape, mean_count, dtype
        The synthetic stack (distinct random frames, cycled every 64 frames: the
        compressor sees each frame chunk independently, so cycling does not help it).
    workdir
        Scratch directory (default: a new temporary directory, removed afterwards).
    seed
        Random seed of the frames.

    Returns
    -------
    dict
        With the source in the page cache (both CPU-bound here): ``input_MB``,
        ``copy_MB_per_s``, ``ingest_MB_per_s``, ``ingest_vs_copy``, ``ingest_cpu_s`` and
        ``ingest_MB_per_cpu_s`` (CPU time of all threads: stable on a loaded machine where
        wall-clock rates are not). With the source evicted from the page cache before each
        (read from disk, as a recorded series is): ``cold_copy_MB_per_s``,
        ``cold_ingest_MB_per_s``, ``cold_ingest_vs_copy`` (absent where the page cache
        cannot be asked). Compression: ``stored_MB``, ``compression_ratio`` (vs uint8
        counts), ``entropy_bound_ratio``, ``fraction_of_bound``, ``entropy_bits_per_px``.
    """
    import tqdm  # noqa: F401  (imported before timing: measure throughput, not import time)
    import zarr  # noqa: F401

    import lowdose.store.ingest  # noqa: F401

    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lowdose-bench-")) if workdir is None else Path(workdir)
    try:
        source = write_poisson_tiff(
            root / "stack.tif", n_frames, frame_shape, mean_count, seed=seed, dtype=dtype
        )
        input_bytes = source.stat().st_size
        store = root / "series.zarr"
        # A first ingest in a process costs ≈ 1 s more (lazy imports and first use of the
        # readers, codecs and thread pools): warm up on a small stack so that neither timed
        # ingest (the cold one runs first) pays it.
        warm = write_poisson_tiff(root / "warm.tif", 8, frame_shape, mean_count, seed=seed + 1, dtype=dtype)
        _timed_ingest(warm, root / "warm.zarr")
        shutil.rmtree(root / "warm.zarr", ignore_errors=True)
        warm.unlink()
        cold: dict[str, float] = {}
        if evict_from_page_cache(source):
            copy_s = _timed_copy(source, root / "copy.tif")
            evict_from_page_cache(source)
            ingest_s, _ = _timed_ingest(source, store)
            cold = {
                "cold_copy_MB_per_s": input_bytes / 1e6 / copy_s,
                "cold_ingest_MB_per_s": input_bytes / 1e6 / ingest_s,
                "cold_ingest_vs_copy": copy_s / ingest_s,
            }
        with source.open("rb") as handle:  # into the page cache (already there after a cold ingest)
            while handle.read(8 << 20):
                pass
        copy_s = _timed_copy(source, root / "copy.tif")
        ingest_s, cpu_s = _timed_ingest(source, store)
        stored = _stored_bytes(store)
        pixels = n_frames * frame_shape[0] * frame_shape[1]
        ratio = pixels / stored  # against one byte per pixel (uint8 counts)
        bound = entropy_bound_ratio(mean_count, "uint8")
        return {
            "n_frames": float(n_frames),
            "input_MB": input_bytes / 1e6,
            "copy_MB_per_s": input_bytes / 1e6 / copy_s,
            "ingest_MB_per_s": input_bytes / 1e6 / ingest_s,
            "ingest_vs_copy": copy_s / ingest_s,
            "ingest_cpu_s": cpu_s,
            "ingest_MB_per_cpu_s": input_bytes / 1e6 / max(cpu_s, 1e-9),
            **cold,
            "stored_MB": stored / 1e6,
            "compression_ratio": ratio,
            "entropy_bits_per_px": poisson_entropy_bits(mean_count),
            "entropy_bound_ratio": bound,
            "fraction_of_bound": ratio / bound,
        }
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def codec_comparison(
    *, mean_count: float = 0.45, frames: int = 32, frame_shape: tuple[int, int] = (512, 512), seed: int = 0
) -> list[dict[str, Any]]:
    """Compression ratio (fraction of the entropy bound) and speed of Blosc variants on one chunk."""
    from numcodecs import Blosc

    chunk = np.random.default_rng(seed).poisson(mean_count, (frames, *frame_shape)).astype("uint8")
    bound = entropy_bound_ratio(mean_count, "uint8")
    rows = []
    shuffles = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
    for cname in ("zstd", "lz4hc", "blosclz"):
        for clevel in (1, 3, 5):
            for shuffle_name, shuffle in shuffles.items():
                for blocksize in (0, 1 << 20):
                    codec = Blosc(cname=cname, clevel=clevel, shuffle=shuffle, blocksize=blocksize)
                    started = time.perf_counter()
                    encoded = codec.encode(chunk)
                    seconds = time.perf_counter() - started
                    ratio = chunk.nbytes / len(encoded)
                    rows.append(
                        {
                            "cname": cname,
                            "clevel": clevel,
                            "shuffle": shuffle_name,
                            "blocksize": blocksize,
                            "ratio": ratio,
                            "fraction_of_bound": ratio / bound,
                            "encode_MB_per_s": chunk.nbytes / 1e6 / seconds,
                        }
                    )
    return rows
