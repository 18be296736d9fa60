"""``lowdose bench``: measured figures of each stage, written as JSON.

Each stage returns a dict of figures (medians over repeats with their spread
where repeats make sense) and, where the issue asks for one, a bound taken in
the same run. This module only gathers: the measuring code lives beside the
code it measures (``store.bench``, ``parallel.bench``, ``models.bench``).
"""

from __future__ import annotations

import json
import os
import platform as std_platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = ("denoise", "ingest", "pipeline", "simulate")


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    from lowdose.cli.version import package_versions

    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:  # pragma: no cover - psutil is a core dependency
        memory_gb = None
    return {
        "cpu_count": os.cpu_count(),
        "processor": std_platform.processor() or std_platform.machine(),
        "memory_gb": memory_gb,
        "system": std_platform.platform(),
        "versions": package_versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def bench_denoise(quick: bool) -> dict[str, Any]:
    """Seconds per frame of the default, paper and baseline models vs a conv roofline."""
    import torch

    from lowdose.models.artefact import load_model
    from lowdose.models.bench import conv_roofline, model_speed
    from lowdose.models.registry import build

    torch.set_num_threads(1)  # one thread per worker, as the pipeline runs it
    repeats = 1 if quick else 3
    sizes = (128,) if quick else (512, 1024)
    default, _card = load_model("default")
    models: dict[str, Any] = {"default": default, "small_unet": build("small_unet")}
    if not quick:
        models["unet_paper"] = build("unet", scales=6, base_channels=128, bias_free=True)
    roof = conv_roofline(channels=32 if quick else 64, size_px=64 if quick else 256, repeats=repeats)
    results: dict[str, Any] = {"roofline_conv3x3": roof, "torch_threads": 1, "models": {}}
    for name, model in models.items():
        per_size = {}
        for size in sizes:
            if name == "unet_paper" and size > 512:
                continue  # tens of seconds per 1024² frame on a CPU core; 512² shows the scaling
            speed = model_speed(model, size, repeats=repeats)
            speed["fraction_of_roofline"] = speed["gflop_per_s"] / roof["gflop_per_s"]
            per_size[str(size)] = speed
        results["models"][name] = per_size
    return results


def bench_ingest(quick: bool) -> dict[str, Any]:
    """Ingest MB/s vs a plain file copy; compression ratio vs the Poisson entropy bound."""
    from lowdose.store.bench import ingest_benchmark

    if quick:
        return ingest_benchmark(n_frames=64, frame_shape=(64, 64))
    return ingest_benchmark(n_frames=1024, frame_shape=(512, 512))


def bench_pipeline(quick: bool) -> dict[str, Any]:
    """Pipeline frames/s on a LocalCluster vs a bare single-process loop."""
    from lowdose.parallel.bench import pipeline_benchmark
    from lowdose.parallel.simulate_series import SeriesSpec, simulate_series

    frames, size = (16, 128) if quick else (200, 512)
    with tempfile.TemporaryDirectory(prefix="lowdose-bench-") as tmp:
        series = Path(tmp) / "series.zarr"
        simulate_series(series, SeriesSpec(n_frames=frames, size_px=size, n_states=4), progress=False)
        return pipeline_benchmark(
            series,
            Path(tmp) / "out",
            n_workers=2,
            threads_per_worker=1,
            baseline_frames=8 if quick else 20,
        )


def bench_simulate(quick: bool) -> dict[str, Any]:
    """Images/hour of the grid runner on the `tiny` (quick) or `small` preset's first structures."""
    from lowdose.parallel.cluster import connect
    from lowdose.parallel.simulate import run_grid
    from lowdose.physics.grid import load_preset
    from lowdose.store.simulation_set import done_images

    config = load_preset("tiny" if quick else "small")
    n_structures = 1 if quick else 4
    with tempfile.TemporaryDirectory(prefix="lowdose-bench-") as tmp:
        out = Path(tmp) / "sim.zarr"
        with connect("local", n_workers=1, threads_per_worker=1, quiet=True) as client:
            start = time.perf_counter()
            run_grid(config, out, client, progress=False, max_structures=n_structures)
            elapsed = time.perf_counter() - start
            worker_rss = client.run(lambda: __import__("psutil").Process().memory_info().rss)
        n_images = int(done_images(out).sum())
    return {
        "preset": "tiny" if quick else "small",
        "structures": n_structures,
        "images": n_images,
        "seconds": elapsed,
        "images_per_hour": n_images / elapsed * 3600 if elapsed > 0 else float("nan"),
        "worker_rss_mb_at_end": {k: v / 1e6 for k, v in worker_rss.items()},
    }


RUNNERS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "denoise": bench_denoise,
    "ingest": bench_ingest,
    "pipeline": bench_pipeline,
    "simulate": bench_simulate,
}


def run_bench(stages: list[str], out: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """Run ``stages`` and write machine info + figures as JSON to ``out``."""
    from lowdose.errors import LowdoseInputError

    unknown = [s for s in stages if s not in RUNNERS]
    if unknown:
        raise LowdoseInputError(f"unknown bench stage(s) {unknown}; expected some of {list(STAGES)}")
    report: dict[str, Any] = {"schema": 1, "quick": quick, "machine": machine_info(), "stages": {}}
    for stage in stages or list(STAGES):
        print(f"bench {stage} ...", flush=True)
        start = time.perf_counter()
        report["stages"][stage] = RUNNERS[stage](quick)
        report["stages"][stage]["stage_seconds"] = time.perf_counter() - start
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(out)
    return report


def validate_report(report: dict[str, Any]) -> None:
    """Check the JSON layout every consumer (README table, tests) relies on."""
    if report.get("schema") != 1 or not isinstance(report.get("stages"), dict):
        raise ValueError("bench report: expected schema 1 with a 'stages' mapping")
    for key in ("cpu_count", "versions", "date_utc"):
        if key not in report.get("machine", {}):
            raise ValueError(f"bench report: machine info lacks {key!r}")
    for stage, figures in report["stages"].items():
        if stage not in STAGES or "stage_seconds" not in figures:
            raise ValueError(f"bench report: stage {stage!r} malformed")
