"""Measure the pipeline: throughput against a bare loop, peak memory, and accuracy vs ground truth.

:func:`pipeline_benchmark` runs ``run_pipeline`` on a LocalCluster over a
(synthetic) FrameSeries and a bare single-process, single-thread loop over the
same kernels, and reads the outputs back to score them against the series'
ground-truth column table: median per-frame surface/bulk F1 and how well the
likelihood verdicts separate real from spurious detections. It is the engine of
``lowdose bench pipeline``.

Calls kernels (``analysis``) only to score outputs; never imports torch at
module level.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lowdose.errors import LowdoseInputError


class _PeakMemory:
    """Sample the RSS of this process and its children (the local workers) in a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process(os.getpid())
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    @staticmethod
    def cpu_seconds() -> float:
        """User + system CPU seconds used so far by this process and its live children."""
        import psutil

        me = psutil.Process(os.getpid())
        total = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())


class ProcessPeaks:
    """Sample the RSS of named processes in a thread and keep each one's peak.

    ``pids`` maps a label (``client``, a worker address) to a process id; a pid
    that appears under several labels (threaded workers) is sampled once per label.
    """

    def __init__(self, pids: dict[str, int], interval_s: float = 0.1) -> None:
        import psutil

        self.interval_s = interval_s
        self.peak_bytes = dict.fromkeys(pids, 0)
        self._procs = {label: psutil.Process(pid) for label, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for label, proc in self._procs.items():
            try:
                self.peak_bytes[label] = max(self.peak_bytes[label], proc.memory_info().rss)
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peaks_mb(self) -> dict[str, float]:
        """Peak RSS per label in MiB."""
        return {label: value / 2**20 for label, value in self.peak_bytes.items()}


@contextlib.contextmanager
def bench_cluster(**options: Any) -> Iterator[Any]:
    """:func:`lowdose.parallel.cluster.connect`, tolerating a slow teardown once measured.

    On a heavily shared machine worker processes can take longer than Dask's
    timeout to exit; the figures are already taken by then, so a ``TimeoutError``
    from closing the cluster is reported on stderr instead of losing the stage.
    """
    from lowdose.parallel.cluster import connect

    manager = connect(**options)
    client = manager.__enter__()
    try:
        yield client
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            manager.__exit__(None, None, None)
        except TimeoutError:
            print("lowdose bench: the Dask cluster was slow to shut down (ignored)", file=sys.stderr)


def cluster_pids(client: Any) -> dict[str, int]:
    """``{"client": pid, worker address: pid, ...}`` of a connected client's cluster."""
    pids = {"client": os.getpid()}
    pids.update({address: int(pid) for address, pid in client.run(os.getpid).items()})
    return pids


_KERNEL_SECONDS = {"seconds": 0.0, "frames": 0}
_KERNEL_LOCK = threading.Lock()


class TimedKernel:
    """The shipped per-frame analysis kernel with a clock around it.

    Seconds accumulate in the process that runs it (a worker); read them with
    ``client.run(kernel_seconds)``. Picklable, so it travels to the workers.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the shipped kernel on one frame and add its seconds to this process's total."""
        from lowdose.parallel.analyze import default_kernel

        start = time.perf_counter()
        out = default_kernel()(*args, **kwargs)
        with _KERNEL_LOCK:
            _KERNEL_SECONDS["seconds"] += time.perf_counter() - start
            _KERNEL_SECONDS["frames"] += 1
        return out


def kernel_seconds(reset: bool = False) -> dict[str, float]:
    """Seconds and frames accumulated by :class:`TimedKernel` in this process."""
    with _KERNEL_LOCK:
        out = {"seconds": float(_KERNEL_SECONDS["seconds"]), "frames": float(_KERNEL_SECONDS["frames"])}
        if reset:
            _KERNEL_SECONDS.update(seconds=0.0, frames=0)
    return out


def task_split(task_stream: list[dict[str, Any]]) -> dict[str, float]:
    """Compute seconds of pipeline tasks summed by kind, from a Dask task stream.

    ``denoise`` (keys containing ``lowdose-denoise``: Dask fuses the zarr read
    feeding the model into the same task, so this includes that read),
    ``chunk`` (``_chunk_task``: analysis and writes), ``read`` (every other
    task: zarr loads, rechunks) and ``transfer`` (data moved between workers).
    """
    out = {"read": 0.0, "denoise": 0.0, "chunk": 0.0, "transfer": 0.0}
    for record in task_stream:
        key = record["key"]
        name = str(key[0] if isinstance(key, tuple) else key)
        if "lowdose-denoise" in name:
            kind = "denoise"
        elif "_chunk_task" in name:
            kind = "chunk"
        else:
            kind = "read"
        for startstop in record.get("startstops", ()):
            seconds = float(startstop["stop"] - startstop["start"])
            if startstop.get("action") == "compute":
                out[kind] += seconds
            elif startstop.get("action") == "transfer":
                out["transfer"] += seconds
    return out


def _warm_worker(handle: Any, series: str, pixel_size_A: float) -> None:
    """Run one frame through every kernel and writer, so imports and caches are warm."""
    import io

    from lowdose.parallel.analyze import analyze_block
    from lowdose.parallel.denoise import denoise_frames
    from lowdose.store.series import open_series

    raw = np.asarray(open_series(series)["counts"][:1].compute(scheduler="sync").values)
    den = denoise_frames(raw, handle, device="cpu")
    columns, frames = analyze_block(raw, den, frame_offset=0, pixel_size_A=pixel_size_A)
    columns.to_parquet(io.BytesIO())
    frames.to_parquet(io.BytesIO())


def bare_loop(
    series: str | Path,
    model: Any = "default",
    *,
    n_frames: int | None = None,
    analysis: Any = None,
    first_frame: int = 0,
) -> dict[str, Any]:
    """Denoise and analyse frames one by one in this process on one thread (the baseline).

    Every frame gets the same kernel call as in the pipeline's tasks, including the
    frame's ground-truth rows when the series has a ground-truth table (the kernel
    then also scores the frame and guesses the polarity on the particle's box).

    Frames ``first_frame`` … ``first_frame + n_frames - 1`` (``n_frames=None``: to the end).
    Returns ``{"frames", "elapsed_s", "frames_per_s", "cpu_s", "split_s"}`` (split:
    seconds reading, denoising and analysing); the model load is not timed.
    """
    import torch

    from lowdose.analysis.frame import analyze_frame
    from lowdose.parallel.analyze import analysis_config
    from lowdose.parallel.denoise import denoise_frames, model_handle
    from lowdose.parallel.pipeline import read_ground_truth
    from lowdose.store.series import open_series

    ds = open_series(series)
    handle = model_handle(model)
    truth = read_ground_truth(series)
    truth_by_frame = dict(tuple(truth.groupby("frame"))) if truth is not None else {}
    config = analysis_config(analysis)
    pixel_size_A = float(ds.attrs["pixel_size_A"])
    end = int(ds.sizes["frame"]) if n_frames is None else min(first_frame + n_frames, int(ds.sizes["frame"]))
    total = max(end - first_frame, 0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        handle.load("cpu")
        split = {"read": 0.0, "denoise": 0.0, "analyse": 0.0}
        t0, cpu0 = time.perf_counter(), time.process_time()
        counts = ds["counts"]
        chunk = int(counts.data.chunks[0][0]) if hasattr(counts.data, "chunks") else max(end, 1)
        block_start, block_first, block = -1, 0, np.empty((0,))
        for f in range(first_frame, end):
            a = time.perf_counter()
            if (
                f // chunk != block_start
            ):  # each store chunk is read (decompressed) once, as the pipeline does
                block_start = f // chunk
                block_first = max(block_start * chunk, first_frame)
                block = np.asarray(counts[block_first : min((block_start + 1) * chunk, end)].values)
            raw = block[f - block_first]
            b = time.perf_counter()
            den = denoise_frames(raw, handle, device="cpu", batch_frames=1)
            c = time.perf_counter()
            gt = truth_by_frame.get(f, truth.iloc[:0]) if truth is not None else None
            analyze_frame(raw, den, pixel_size_A=pixel_size_A, frame=f, config=config, ground_truth=gt)
            split["read"] += b - a
            split["denoise"] += c - b
            split["analyse"] += time.perf_counter() - c
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        torch.set_num_threads(previous)
    return {
        "frames": float(total),
        "elapsed_s": elapsed,
        "frames_per_s": total / elapsed if elapsed > 0 else float("nan"),
        "cpu_s": cpu,
        "split_s": split,
    }


def llr_separation(
    columns: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    pixel_size_A: float,
    tolerance_A: float = 0.6,
    real_threshold: float = 0.005,
    spurious_threshold: float = -0.006,
) -> dict[str, float]:
    """How well the LLR verdicts separate true from spurious detections.

    A detected column is *real* when it matches a ground-truth column of its frame
    within ``tolerance_A`` and *spurious* otherwise; only detections inside the
    ground truth's padded bounding box count (outside it the ground truth says
    nothing). Returns the counts and the fractions of real columns with
    ``llr >= real_threshold`` and of spurious ones with ``llr <= spurious_threshold``.
    """
    from lowdose.analysis.columns import match_columns

    tol_px = tolerance_A / pixel_size_A
    real_llr: list[np.ndarray] = []
    spurious_llr: list[np.ndarray] = []
    truth_by_frame = dict(tuple(truth.groupby("frame")))
    for frame, detected in columns.groupby("frame"):
        gt = truth_by_frame.get(frame)
        if gt is None or gt.empty:
            continue
        box = (
            (detected["x_px"] >= gt["x_px"].min() - tol_px)
            & (detected["x_px"] <= gt["x_px"].max() + tol_px)
            & (detected["y_px"] >= gt["y_px"].min() - tol_px)
            & (detected["y_px"] <= gt["y_px"].max() + tol_px)
        )
        inside = detected[box]
        matched, unmatched, _ = match_columns(
            inside[["x_px", "y_px"]].to_numpy(), gt[["x_px", "y_px"]].to_numpy(), tol_px
        )
        llr = inside["llr"].to_numpy(dtype=np.float64)
        real_llr.append(llr[matched[:, 0]])
        spurious_llr.append(llr[unmatched])
    real = np.concatenate(real_llr) if real_llr else np.zeros(0)
    spurious = np.concatenate(spurious_llr) if spurious_llr else np.zeros(0)
    return {
        "n_real_columns": float(real.size),
        "n_spurious_columns": float(spurious.size),
        "frac_real_llr_above_threshold": float(np.mean(real >= real_threshold))
        if real.size
        else float("nan"),
        "frac_spurious_llr_below_threshold": (
            float(np.mean(spurious <= spurious_threshold)) if spurious.size else float("nan")
        ),
        "median_llr_real": float(np.median(real)) if real.size else float("nan"),
        "median_llr_spurious": float(np.median(spurious)) if spurious.size else float("nan"),
    }


def pipeline_benchmark(
    series: str | Path,
    out: str | Path,
    *,
    model: Any = "default",
    cluster: str = "local",
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    processes: bool = True,
    batch_frames: int = 4,
    analysis: dict[str, Any] | None = None,
    baseline_frames: int | None = 20,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the pipeline over ``series`` into ``out`` (fresh) and measure it.

    Parameters
    ----------
    series
        FrameSeries store; with a ground-truth table beside it (synthetic series)
        the accuracy numbers are filled in.
    out
        Output folder; deleted first.
    model
        Model artefact name/path (or module / handle).
    cluster, scheduler, n_workers, threads_per_worker, processes
        Where the pipeline runs (see :func:`lowdose.parallel.cluster.connect`).
    batch_frames
        Frames per forward pass in the pipeline.
    analysis
        ``AnalysisConfig`` fields.
    baseline_frames
        Frames of the bare single-process loop (``None``: all frames): the first half
        runs just before the pipeline, the second just after, so that a change of load
        on a shared machine during the run weighs on both sides alike.
    progress
        Show the pipeline's progress bar.

    Returns
    -------
    dict
        ``pipeline_frames_per_s``, ``baseline_frames_per_s``, ``speedup``,
        ``n_cores``, ``ratio_per_core`` (speedup / cores used), CPU seconds per
        frame of both and ``cpu_efficiency`` (their ratio; robust on a shared
        machine, where wall-clock rates are not), ``peak_memory_MB``
        (this process + its local workers), ``median_surface_f1``,
        ``median_bulk_f1`` (and precision/recall), the LLR separation of
        :func:`llr_separation`, and the run's shape and model identity;
        ``peak_rss_MB`` per process (client, each worker), ``split_s`` /
        ``split_fraction``: the workers' compute seconds reading, denoising,
        analysing and writing (from the Dask task stream and a timed analysis
        kernel), and ``baseline_split_s`` of the bare loop; ``pipeline_core_share`` and
        ``baseline_core_share``: CPU seconds per wall second per core each side got (on
        a shared machine ``ratio_per_core`` ≈ ``cpu_efficiency`` × their quotient).
    """
    from distributed import get_task_stream

    from lowdose.parallel.denoise import model_handle
    from lowdose.parallel.outputs import read_table
    from lowdose.parallel.pipeline import PipelineConfig, read_ground_truth, run_pipeline
    from lowdose.store.series import open_series

    series = Path(series)
    ds = open_series(series)
    handle = model_handle(model)
    config = PipelineConfig.model_validate(
        {
            "series": series,
            "out": Path(out),
            "batch_frames": batch_frames,
            "analysis": analysis or {},
            "register_catalog": False,
            "progress": progress,
            "device": "cpu",
        }
    )
    with bench_cluster(
        cluster=cluster,
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        quiet=not progress,
    ) as client:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        n_cores = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
        # Imports and the model load happen once per worker; keep them out of the timing.
        warm = [
            client.submit(
                _warm_worker,
                handle,
                str(series),
                float(ds.attrs["pixel_size_A"]),
                workers=[address],
                pure=False,
                allow_other_workers=False,
            )
            for address in workers
        ]
        client.gather(warm)
        n_total = int(ds.sizes["frame"])
        n_base = n_total if baseline_frames is None else min(baseline_frames, n_total)
        base_before = bare_loop(series, handle, n_frames=n_base // 2, analysis=analysis)
        pids = cluster_pids(client)
        client.run(kernel_seconds, True)
        cpu_before = _PeakMemory.cpu_seconds()
        with _PeakMemory() as memory, ProcessPeaks(pids) as peaks, get_task_stream(client) as stream:
            result = run_pipeline(config, client, model=handle, kernel=TimedKernel(), overwrite=True)
        cpu_pipeline = _PeakMemory.cpu_seconds() - cpu_before
        analysed = client.run(kernel_seconds)
        if not processes:  # threaded workers share this process: one accumulator
            analysed = {"local": next(iter(analysed.values()))}
        analyse_s = sum(v["seconds"] for v in analysed.values())
        tasks = task_split(stream.data)
        base_after = bare_loop(
            series, handle, n_frames=n_base - n_base // 2, analysis=analysis, first_frame=n_base // 2
        )
    report: dict[str, Any] = {
        "n_frames": result.n_frames,
        "frame_shape": list(ds["counts"].shape[1:]),
        "n_workers": len(workers),
        "n_cores": n_cores,
        "model_id": handle.model_id,
        "model_sha256": handle.sha256,
        "pipeline_elapsed_s": result.elapsed_s,
        "pipeline_frames_per_s": result.n_frames / result.elapsed_s,
        "peak_memory_MB": memory.peak_bytes / 2**20,
        "pipeline_cpu_s_per_frame": cpu_pipeline / result.n_frames,
        "peak_rss_MB": peaks.peaks_mb(),
    }
    # Where the workers' time went (task compute seconds summed over workers). The
    # chunk task analyses (timed inside by TimedKernel) and writes (the rest of it).
    split = {
        "read": tasks["read"],
        "denoise": tasks["denoise"],
        "analyse": analyse_s,
        "write": max(tasks["chunk"] - analyse_s, 0.0),
    }
    busy = sum(split.values()) or 1.0
    report["split_s"] = split
    report["split_fraction"] = {k: v / busy for k, v in split.items()}
    report["transfer_s"] = tasks["transfer"]
    report["worker_busy_fraction"] = busy / (result.elapsed_s * n_cores)
    halves = [b for b in (base_before, base_after) if b["frames"] > 0]
    base = {
        "frames": sum(b["frames"] for b in halves),
        "frames_per_s": sum(b["frames"] for b in halves) / sum(b["elapsed_s"] for b in halves),
        "cpu_s": sum(b["cpu_s"] for b in halves),
        "split_s": {k: sum(b["split_s"][k] for b in halves) for k in halves[-1]["split_s"]},
    }
    report["baseline_frames"] = int(base["frames"])
    report["baseline_frames_per_s"] = base["frames_per_s"]
    report["baseline_frames_per_s_before_after"] = [b["frames_per_s"] for b in (base_before, base_after)]
    report["speedup"] = report["pipeline_frames_per_s"] / base["frames_per_s"]
    report["ratio_per_core"] = report["speedup"] / n_cores
    report["baseline_cpu_s_per_frame"] = base["cpu_s"] / base["frames"]
    report["baseline_split_s"] = base["split_s"]
    # CPU seconds per frame do not depend on what else runs on the machine; wall-clock rates do.
    report["cpu_efficiency"] = report["baseline_cpu_s_per_frame"] / report["pipeline_cpu_s_per_frame"]
    # The share of its cores each side got (CPU seconds over wall seconds): on a shared
    # machine ratio_per_core = cpu_efficiency × pipeline share / baseline share.
    report["pipeline_core_share"] = cpu_pipeline / (result.elapsed_s * n_cores)
    report["baseline_core_share"] = base["cpu_s"] * base["frames_per_s"] / base["frames"]

    frames = read_table(Path(out) / "frames.parquet")
    for name in (
        "surface_f1",
        "bulk_f1",
        "surface_precision",
        "surface_recall",
        "bulk_precision",
        "bulk_recall",
    ):
        if name in frames:
            report[f"median_{name}"] = float(frames[name].median())
    truth = read_ground_truth(series)
    if truth is not None:
        if truth.empty:
            raise LowdoseInputError(f"{series}: the ground-truth table is empty")
        columns = read_table(Path(out) / "columns.parquet")
        pixel_size_A = float(ds.attrs["pixel_size_A"])
        report.update(llr_separation(columns, truth, pixel_size_A=pixel_size_A))
        if "element" in truth.columns:
            # The same on the particle alone: Pt columns and detections inside their box.
            pt = truth[truth["element"].astype(str) == "Pt"]
            pt_only = llr_separation(columns, pt, pixel_size_A=pixel_size_A)
            report.update({f"{key}_pt": value for key, value in pt_only.items()})
    return report


def lattice_series(
    path: str | Path, n_frames: int, size_px: int, *, chunk_frames: int = 32, seed: int = 0
) -> Path:
    """A FrameSeries of Poisson counts of a drifting column lattice (no physics, fast to make).

    A pool of 32 noisy frames (Poisson at 0.45 e/px around a lattice of 30 px
    period, one random offset per frame) is cycled, so a 10,000-frame series costs
    seconds; the pipeline sees frames with columns to find in every one of them.
    """
    from lowdose.store.series import append_frames, create_frame_series

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32)
    pool = []
    for _ in range(min(32, n_frames)):
        dy, dx = rng.uniform(0, 30, 2)
        clean = 0.45 * (1.0 + 0.8 * np.cos(2 * np.pi * (yy + dy) / 30) * np.cos(2 * np.pi * (xx + dx) / 30))
        pool.append(rng.poisson(clean).astype(np.uint8))
    stack = np.stack(pool)
    create_frame_series(
        path, (size_px, size_px), dtype="uint8", chunk_frames=chunk_frames, detector="lowdose bench lattice"
    )
    for start in range(0, n_frames, chunk_frames):
        n = min(chunk_frames, n_frames - start)
        append_frames(path, stack[np.arange(start, start + n) % len(stack)])
    return Path(path)


def memory_benchmark(
    workdir: str | Path,
    *,
    frame_counts: tuple[int, ...] = (1000, 10000),
    size_px: int = 256,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    batch_frames: int = 4,
) -> dict[str, Any]:
    """Peak RSS of the client and of each worker running the pipeline over series of each length.

    Each length gets a fresh LocalCluster (so peaks do not carry over), a lattice
    series (:func:`lattice_series`) and the full pipeline (denoise + analyse +
    writes) with the default model.

    Returns
    -------
    dict
        Per length (``runs[str(n)]``): ``client_peak_MB``, ``worker_peak_MB``
        (per worker), ``max_worker_peak_MB``, ``elapsed_s``, ``frames_per_s`` and
        ``make_series_s``; and ``worker_growth`` / ``client_growth``: the peak of
        the longest series over the peak of the shortest.
    """
    from lowdose.parallel.denoise import model_handle
    from lowdose.parallel.pipeline import PipelineConfig, run_pipeline

    workdir = Path(workdir)
    handle = model_handle("default")
    runs: dict[str, Any] = {}
    for n_frames in frame_counts:
        series = workdir / f"lattice-{n_frames}.zarr"
        t0 = time.perf_counter()
        lattice_series(series, n_frames, size_px)
        made = time.perf_counter() - t0
        config = PipelineConfig.model_validate(
            {
                "series": series,
                "out": workdir / f"out-{n_frames}",
                "batch_frames": batch_frames,
                "register_catalog": False,
                "progress": False,
                "device": "cpu",
            }
        )
        with bench_cluster(
            cluster="local", n_workers=n_workers, threads_per_worker=threads_per_worker, quiet=True
        ) as client:
            pids = cluster_pids(client)
            with ProcessPeaks(pids) as peaks:
                result = run_pipeline(config, client, model=handle, overwrite=True)
        mb = peaks.peaks_mb()
        workers = {k: v for k, v in mb.items() if k != "client"}
        runs[str(n_frames)] = {
            "n_frames": n_frames,
            "make_series_s": made,
            "elapsed_s": result.elapsed_s,
            "frames_per_s": n_frames / result.elapsed_s,
            "client_peak_MB": mb["client"],
            "worker_peak_MB": workers,
            "max_worker_peak_MB": max(workers.values()) if workers else float("nan"),
        }
        shutil.rmtree(series, ignore_errors=True)
        shutil.rmtree(workdir / f"out-{n_frames}", ignore_errors=True)
    short, long = runs[str(min(frame_counts))], runs[str(max(frame_counts))]
    return {
        "frame_shape": [size_px, size_px],
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "runs": runs,
        "worker_growth": long["max_worker_peak_MB"] / short["max_worker_peak_MB"],
        "client_growth": long["client_peak_MB"] / short["client_peak_MB"],
    }
