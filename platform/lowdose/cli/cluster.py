"""``lowdose cluster up|info|backends``: start, inspect and list Dask clusters.

``up`` starts a cluster with any backend of :mod:`lowdose.parallel.cluster`,
prints its scheduler and dashboard addresses and keeps it running until Ctrl-C,
so that other ``lowdose`` commands can use it with ``--scheduler ADDRESS``.
Heavy imports (distributed, dask-jobqueue, dask-kubernetes) stay inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lowdose.cli._pipeline_options import BackendOption, GpusOption, cluster_overrides, merge_cluster

cluster_app = typer.Typer(help="Start, inspect and list Dask clusters.", no_args_is_help=True)


def read_cluster_file(path: Path) -> dict[str, Any]:
    """The ``cluster:`` block of a YAML file (a pipeline config, or a file holding only that block).

    Returns the fields of :class:`~lowdose.parallel.pipeline.ClusterConfig`
    (``options`` holds backend options such as ``cores`` or ``spec``), validated
    strictly per backend. A relative ``options.spec`` is relative to the file.
    """
    import yaml

    from lowdose.config.base import validate_config
    from lowdose.errors import ConfigError
    from lowdose.parallel.pipeline import ClusterConfig

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read cluster config ({err.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'cluster:' block")
    block = data.get("cluster", data)
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: cluster: expected a mapping")
    block = dict(block)
    options = block.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: cluster.options: expected a mapping")
    if isinstance(options.get("spec"), str) and not Path(options["spec"]).is_absolute():
        block["options"] = {**options, "spec": str(path.resolve().parent / options["spec"])}
    fields: dict[str, Any] = validate_config(ClusterConfig, block, f"{path} (cluster)").model_dump(
        exclude={"version"}
    )
    return fields


@cluster_app.command("up")
def up(
    cluster: str | None = typer.Option(
        None, "--cluster", help="Backend name (see `lowdose cluster backends`)."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML with a 'cluster:' block (+ 'options:')."),
    n_workers: int | None = typer.Option(None, "--n-workers", "--workers", min=1, help="Number of workers."),
    threads_per_worker: int | None = typer.Option(
        None, "--threads-per-worker", min=1, help="Threads/worker."
    ),
    gpus: str | None = GpusOption,
    option: list[str] = BackendOption,
    run_for_s: float | None = typer.Option(
        None, "--for", min=0, help="Stop after this many seconds (default: run until Ctrl-C)."
    ),
) -> None:
    """Start a Dask cluster, print its scheduler and dashboard addresses, keep it up until Ctrl-C."""
    import time

    from lowdose.config.base import validate_config
    from lowdose.parallel.cluster import connect
    from lowdose.parallel.pipeline import ClusterConfig

    settings: dict[str, Any] = read_cluster_file(config) if config else {}
    given = cluster_overrides(cluster, None, n_workers, threads_per_worker, gpus, option)
    settings = merge_cluster(settings, given)
    if settings.get("name", "auto") == "auto" and not settings.get("scheduler"):
        settings["name"] = "local"  # `up` of "auto" means a cluster on this machine
    source = f"{config} (cluster) + command line" if config else "command line"
    checked = validate_config(ClusterConfig, settings, source).model_dump(exclude={"version"})
    name, options = checked.pop("name"), checked.pop("options")
    with connect(name, quiet=True, options=options, **checked) as client:
        address = client.scheduler_info()["address"]
        typer.echo(f"scheduler: {address}")
        typer.echo(f"dashboard: {client.dashboard_link}")
        typer.echo(f"use it:    lowdose run PIPELINE.yaml --scheduler {address}")
        typer.echo("Press Ctrl-C to stop.", err=True)
        deadline = None if run_for_s is None else time.monotonic() + run_for_s
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2 if deadline else 1.0)
        except KeyboardInterrupt:
            typer.echo("stopping", err=True)


def describe(scheduler: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Workers, threads, memory and dashboard of the scheduler at ``scheduler``."""
    from distributed import Client

    from lowdose.errors import LowdoseInputError

    try:
        client = Client(scheduler, timeout=timeout_s)
    except OSError as err:
        raise LowdoseInputError(f"--scheduler {scheduler}: cannot connect ({err})") from None
    try:
        info = client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        return {
            "scheduler": info.get("address", scheduler),
            "dashboard": client.dashboard_link,
            "n_workers": len(workers),
            "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
            "memory_bytes": sum(int(w.get("memory_limit") or 0) for w in workers.values()),
            "workers": sorted(workers),
        }
    finally:
        client.close()


@cluster_app.command("info")
def info(
    scheduler: str = typer.Option(..., "--scheduler", help="Scheduler address, e.g. tcp://10.0.0.5:8786."),
    timeout_s: float = typer.Option(10.0, "--timeout-s", min=0.1, help="Connection timeout."),
) -> None:
    """Print workers, threads, memory and the dashboard of a running cluster."""
    from dask.utils import format_bytes

    d = describe(scheduler, timeout_s)
    typer.echo(f"scheduler: {d['scheduler']}")
    typer.echo(f"dashboard: {d['dashboard']}")
    typer.echo(f"workers:   {d['n_workers']}")
    typer.echo(f"threads:   {d['threads']}")
    typer.echo(f"memory:    {format_bytes(d['memory_bytes'])}")
    for address in d["workers"]:
        typer.echo(f"  {address}")


@cluster_app.command("backends")
def backends() -> None:
    """List the names accepted by ``--cluster``."""
    from lowdose.parallel.cluster import available_backends

    for name in available_backends():
        typer.echo(name)


def register(app: typer.Typer) -> None:
    """Add the ``cluster`` command group."""
    app.add_typer(cluster_app, name="cluster")
