"""``lowdose run PIPELINE.yaml``: denoise and analyse a frame series on a Dask cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.cli._pipeline_options import (
    BackendOption,
    ClusterOption,
    GpusOption,
    NoCatalogOption,
    OverwriteOption,
    QuietOption,
    SchedulerOption,
    ThreadsOption,
    WorkersOption,
    cluster_overrides,
    merge_cluster,
    run_and_report,
)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command."""

    @app.command("run")
    def run(
        pipeline: Path = typer.Argument(
            ..., help="Pipeline YAML (see `lowdose config validate --kind pipeline`)."
        ),
        cluster: str | None = ClusterOption,
        scheduler: str | None = SchedulerOption,
        n_workers: int | None = WorkersOption,
        threads_per_worker: int | None = ThreadsOption,
        gpus: str | None = GpusOption,
        option: list[str] = BackendOption,
        overwrite: bool = OverwriteOption,
        no_catalog: bool = NoCatalogOption,
        quiet: bool = QuietOption,
    ) -> None:
        """Run (or resume) a pipeline: FrameSeries → denoised.zarr, columns.parquet, frames.parquet."""
        import yaml

        from lowdose.errors import ConfigError

        try:
            data = yaml.safe_load(pipeline.read_text())
        except OSError as err:
            raise ConfigError(f"{pipeline}: cannot read pipeline config ({err.strerror})") from None
        except yaml.YAMLError:
            raise ConfigError(f"{pipeline}: not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{pipeline}: expected a mapping of keys to values")
        overrides = cluster_overrides(cluster, scheduler, n_workers, threads_per_worker, gpus, option)
        if overrides:
            data["cluster"] = merge_cluster(data.get("cluster"), overrides)
        if no_catalog:
            data["register_catalog"] = False
        if quiet:
            data["progress"] = False
        # Relative paths in the YAML are relative to the YAML file (a model named
        # "default" is the shipped one, not a path).
        base = pipeline.resolve().parent
        for key in ("series", "out", "denoised", "model", "catalog"):
            value = data.get(key)
            if (
                isinstance(value, str)
                and not (key == "model" and value == "default")
                and not Path(value).is_absolute()
                and "://" not in value
            ):
                data[key] = str(base / value)
        block = data.get("cluster")
        options = block.get("options") if isinstance(block, dict) else None
        if isinstance(options, dict) and isinstance(options.get("spec"), str):
            if not Path(options["spec"]).is_absolute():  # the kubernetes DaskCluster spec file
                options["spec"] = str(base / options["spec"])
        run_and_report(data, str(pipeline), overwrite)
