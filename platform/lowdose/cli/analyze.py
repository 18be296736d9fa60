"""``lowdose analyze SERIES --denoised DEN.zarr --out OUT``: columns, likelihoods, frame table."""

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
    """Add the ``analyze`` command."""

    @app.command("analyze")
    def analyze(
        series: str = typer.Argument(..., help="FrameSeries of the raw counts (path or fsspec URL)."),
        denoised: str = typer.Option(..., "--denoised", help="DenoisedSeries of the same frames."),
        out: str = typer.Option(..., "--out", help="Output folder: OUT/columns.parquet, OUT/frames.parquet."),
        analysis: Path | None = typer.Option(
            None,
            "--analysis",
            help="YAML of AnalysisConfig settings (top level, or under 'analysis:' as in a pipeline YAML).",
        ),
        time_average: int | None = typer.Option(
            None, "--time-average", min=2, help="Also analyse sums of N frames."
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
        """Detect columns, score their likelihoods and build the frame table (resumable)."""
        block: dict[str, object] = {}
        if analysis is not None:  # errors name the file; the settings go to the pipeline as given
            from lowdose.analysis.frame import AnalysisConfig
            from lowdose.config.base import load_config

            block = load_config(AnalysisConfig, analysis, block="analysis").model_dump(exclude_unset=True)
        data = {
            "series": str(series),
            "out": str(out),
            "stages": ["analyze"],
            "denoised": str(denoised),
            "analysis": block,
            "time_average_frames": time_average,
            "cluster": merge_cluster(
                {}, cluster_overrides(cluster, scheduler, n_workers, threads_per_worker, gpus, option)
            ),
            "register_catalog": not no_catalog,
            "progress": not quiet,
        }
        run_and_report(data, "lowdose analyze", overwrite)
