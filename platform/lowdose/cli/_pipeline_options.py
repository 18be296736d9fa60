"""Flags shared by ``lowdose run``, ``lowdose denoise`` and ``lowdose analyze``.

Private to the CLI (the leading underscore keeps command discovery away from
it). Imports only typer and lowdose.config; heavy imports stay in the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

CLUSTER_HELP = "Dask backend: auto, local, local-cuda, address, or a registered one (slurm, pbs, kubernetes)."
SCHEDULER_HELP = "Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --cluster address)."

ClusterOption = typer.Option(None, "--cluster", help=CLUSTER_HELP)
SchedulerOption = typer.Option(None, "--scheduler", help=SCHEDULER_HELP)
WorkersOption = typer.Option(
    None, "--n-workers", min=1, help="Number of workers (default: sized for the machine)."
)
ThreadsOption = typer.Option(None, "--threads-per-worker", min=1, help="Threads per worker.")
OverwriteOption = typer.Option(False, "--overwrite", help="Delete OUT first instead of resuming.")
NoCatalogOption = typer.Option(False, "--no-catalog", help="Do not register the outputs in the catalog.")
QuietOption = typer.Option(False, "--quiet", help="No progress bar or dashboard link.")


def cluster_overrides(
    cluster: str | None, scheduler: str | None, n_workers: int | None, threads_per_worker: int | None
) -> dict[str, Any]:
    """The ``cluster:`` fields set on the command line."""
    given = {
        "name": cluster,
        "scheduler": scheduler,
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
    }
    return {k: v for k, v in given.items() if v is not None}


def run_and_report(data: dict[str, Any], source: str, overwrite: bool) -> None:
    """Validate a pipeline config mapping, run it, and print where the outputs are."""
    from lowdose.config.base import validate_config
    from lowdose.parallel.pipeline import PipelineConfig, run_pipeline

    config = validate_config(PipelineConfig, data, source)
    result = run_pipeline(config, overwrite=overwrite)
    typer.echo(
        f"{result.n_frames} frames in {result.n_chunks} chunks "
        f"({result.chunks_run} run, {result.chunks_skipped} already done) in {result.elapsed_s:.1f} s"
    )
    for name, path in result.outputs.items():
        typer.echo(f"{name:9s} {Path(path)}")
