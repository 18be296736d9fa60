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


def ingest_floor_cpu_s(source: Path, chunk_frames: int) -> dict[str, float]:
    """CPU seconds of the work every ingest of ``source`` into a FrameSeries must do.

    Each part is timed alone on one thread, on bytes already in memory: Blosc-encoding
    every chunk with the store's settings (:data:`COMPRESSION
    <lowdose.store.series.COMPRESSION>`), the sha256 of the source's bytes (the store
    records it) and the exact count sum (the measured dose). Reading, the chunks'
    crc32c, writing and the store's metadata are left out, and two threads on two cores
    each run slower than one alone (≈ 20 % here, shared caches), so ``total / cores``
    is a floor no implementation of this format goes under: a bound, measured in the
    same run.
    """
    import hashlib
    import threading

    from numcodecs import Blosc

    from lowdose.store.ingest import counts_total
    from lowdose.store.readers import open_source
    from lowdose.store.series import COMPRESSION

    frames = open_source(source)
    try:
        data = np.array(frames.read(0, frames.n_frames))  # a copy in memory, not a file map
    finally:
        frames.close()
    raw = source.read_bytes()
    blosc = Blosc(
        cname=COMPRESSION["cname"],
        clevel=COMPRESSION["clevel"],
        shuffle={"bitshuffle": Blosc.BITSHUFFLE, "shuffle": Blosc.SHUFFLE}[COMPRESSION["shuffle"]],
        blocksize=COMPRESSION["blocksize"],
        typesize=data.dtype.itemsize,
    )
    chunks = [data[lo : lo + chunk_frames] for lo in range(0, data.shape[0], chunk_frames)]
    parts: dict[str, float] = {}

    def timed(name: str, work: Any) -> None:
        started = time.thread_time()
        work()
        parts[name] = time.thread_time() - started

    # A thread of its own for each: numcodecs runs Blosc single-threaded outside the main
    # thread, as the ingest's chunk writers do, and thread_time counts that thread only.
    for name, work in (
        ("encode", lambda: [blosc.encode(chunk) for chunk in chunks]),
        ("sha256", lambda: hashlib.sha256(raw).hexdigest()),
        ("sum", lambda: counts_total(data)),
    ):
        runner = threading.Thread(target=timed, args=(name, work))
        runner.start()
        runner.join()
    parts["total"] = parts["encode"] + parts["sha256"] + parts["sum"]
    return parts


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
        cannot be asked). The floor (:func:`ingest_floor_cpu_s`, same run):
        ``floor_{encode,sha256,sum,total}_cpu_s``, ``floor_MB_per_s`` (total CPU spread
        over every core), ``floor_vs_copy`` and ``cold_floor_vs_copy`` (the best ratio to
        the copy any ingest into this format could reach) and ``ingest_vs_floor``.
        Compression: ``stored_MB``, ``compression_ratio`` (vs uint8 counts),
        ``entropy_bound_ratio``, ``fraction_of_bound``, ``entropy_bits_per_px``.
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
        cold_copy_s = 0.0
        if evict_from_page_cache(source):
            copy_s = cold_copy_s = _timed_copy(source, root / "copy.tif")
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
        from lowdose.store.series import series_attrs

        floor = ingest_floor_cpu_s(source, int(series_attrs(store)["chunk_frames"]))
        floor_s = floor["total"] / (os.cpu_count() or 1)
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
            **{f"floor_{name}_cpu_s": seconds for name, seconds in floor.items()},
            "floor_MB_per_s": input_bytes / 1e6 / floor_s,
            "floor_vs_copy": copy_s / floor_s,
            **({"cold_floor_vs_copy": cold_copy_s / floor_s} if cold_copy_s else {}),
            "ingest_vs_floor": floor_s / ingest_s,
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
