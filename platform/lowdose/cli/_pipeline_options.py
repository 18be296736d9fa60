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
    None,
    "--n-workers",
    "--workers",
    min=1,
    help="Number of workers (default: sized for the machine).",
)
ThreadsOption = typer.Option(None, "--threads-per-worker", min=1, help="Threads per worker.")
GpusOption = typer.Option(
    None,
    "--gpus",
    help="local-cuda: GPUs to use as CUDA_VISIBLE_DEVICES ids, e.g. '0,1' (implies --cluster local-cuda).",
)
BackendOption = typer.Option(
    [],
    "--option",
    "-o",
    help="Backend option KEY=VALUE (repeatable; value read as YAML), e.g. -o cores=8 -o walltime=2:00:00.",
)
OverwriteOption = typer.Option(
    False,
    "--overwrite",
    help="Delete an earlier run's outputs in OUT first instead of resuming (other files stay).",
)
NoCatalogOption = typer.Option(False, "--no-catalog", help="Do not register the outputs in the catalog.")
QuietOption = typer.Option(False, "--quiet", help="No progress bar or dashboard link.")


def parse_option(text: str) -> tuple[str, Any]:
    """Parse one ``--option KEY=VALUE`` (the value is read as YAML: numbers, lists, booleans)."""
    import yaml

    from lowdose.errors import ConfigError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--option {text!r}: expected KEY=VALUE")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def cluster_overrides(
    cluster: str | None,
    scheduler: str | None,
    n_workers: int | None,
    threads_per_worker: int | None,
    gpus: str | None = None,
    option: list[str] | None = None,
) -> dict[str, Any]:
    """The ``cluster:`` fields set on the command line (``options`` only when some were given)."""
    given = {
        "name": cluster,
        "scheduler": scheduler,
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
    }
    found: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    options = dict(parse_option(text) for text in option or [])
    if gpus is not None:
        options["gpus"] = gpus
    if options:
        found["options"] = options
    return found


def merge_cluster(block: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """A config's ``cluster:`` block with command-line ``overrides`` applied (options merged by key).

    ``--gpus`` without a backend named anywhere selects ``local-cuda``.
    """
    merged = dict(block) if isinstance(block, dict) else {}
    options = dict(merged.get("options") or {}) if isinstance(merged.get("options") or {}, dict) else None
    extra = overrides.get("options") or {}
    merged.update({k: v for k, v in overrides.items() if k != "options"})
    if extra:
        if options is None:
            from lowdose.errors import ConfigError

            raise ConfigError("cluster.options: expected a mapping")
        merged["options"] = {**options, **extra}
        if "gpus" in extra and merged.get("name", "auto") == "auto" and not merged.get("scheduler"):
            merged["name"] = "local-cuda"
    return merged


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
    catalog = result.outputs.get("catalog")
    if result.catalog_absolute:  # some product is recorded by absolute path
        typer.echo(
            f"the catalog names products by absolute path: open it with --allow-absolute, e.g. "
            f"lowdose dashboard --catalog {catalog} --allow-absolute"
        )
    elif result.catalog_root is not None:  # some product lies outside the catalog's folder
        typer.echo(
            f"the catalog reaches {result.catalog_root} (products outside {Path(str(catalog)).parent}): "
            f"open it with that folder as root, e.g. "
            f"lowdose dashboard --catalog {catalog} --root {result.catalog_root}"
        )
