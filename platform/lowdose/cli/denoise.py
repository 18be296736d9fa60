"""``lowdose denoise SERIES --out OUT``: denoise a frame series on a Dask cluster."""

from __future__ import annotations

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
    """Add the ``denoise`` command."""

    @app.command("denoise")
    def denoise(
        series: str = typer.Argument(
            ..., help="FrameSeries zarr store (path or fsspec URL, e.g. s3://bucket/s.zarr)."
        ),
        out: str = typer.Option(..., "--out", help="Output folder or URL; frames go to OUT/denoised.zarr."),
        model: str = typer.Option("default", "--model", help="Model artefact name or path."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        tile_px: int = typer.Option(1024, "--tile-px", help="Frames larger than this are tiled."),
        batch_frames: int = typer.Option(4, "--batch-frames", help="Frames per forward pass."),
        tta: int = typer.Option(
            1, "--tta", help="Average the denoiser over 1, 2, 4 or 8 flips/transposes of each frame."
        ),
        out_dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
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
        """Denoise every frame (resumable); writes OUT/denoised.zarr."""
        data = {
            "series": str(series),
            "out": str(out),
            "stages": ["denoise"],
            "model": model,
            "device": device,
            "tile_px": tile_px,
            "batch_frames": batch_frames,
            "tta": tta,
            "out_dtype": out_dtype,
            "cluster": merge_cluster(
                {}, cluster_overrides(cluster, scheduler, n_workers, threads_per_worker, gpus, option)
            ),
            "register_catalog": not no_catalog,
            "progress": not quiet,
        }
        run_and_report(data, "lowdose denoise", overwrite)
