"""``lowdose ingest``: microscope files → FrameSeries zarr store."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``ingest`` command."""

    @app.command("ingest")
    def ingest_command(
        inputs: list[str] = typer.Argument(
            ...,
            help="Input files or TIFF folders in frame order (tif, mrc, dm3/dm4, emd, ser, hspy, h5, npy).",
        ),
        out: Path = typer.Option(..., "--out", help="Output FrameSeries store (SERIES.zarr)."),
        pixel_size_A: float | None = typer.Option(
            None, "--pixel-size-A", help="Pixel size in Å (overrides file)."
        ),
        frame_rate_hz: float | None = typer.Option(
            None, "--frame-rate-hz", help="Frame rate in Hz (overrides file)."
        ),
        dose_e_per_px: float | None = typer.Option(
            None, "--dose-e-per-px", help="Nominal dose per pixel per frame (default: measured mean)."
        ),
        detector: str | None = typer.Option(None, "--detector", help="Detector name recorded in the store."),
        h5_dataset: str | None = typer.Option(
            None, "--h5-dataset", help="Dataset path inside HDF5 inputs (or write file.h5:/path)."
        ),
        float_policy: str = typer.Option(
            "refuse", "--float-policy", help="Float inputs: 'refuse' unless whole numbers, or 'round'."
        ),
        chunk_frames: int | None = typer.Option(
            None, "--chunk-frames", min=1, help="Frames per zarr chunk (default: up to 32, ≤ 64 MiB)."
        ),
        batch_frames: int | None = typer.Option(
            None,
            "--batch-frames",
            min=1,
            help="Frames per read/write batch, rounded up to whole chunks (default: ≈ 64 MiB).",
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Ingest frame files into a chunked, compressed FrameSeries (resumable, re-run is a no-op).

        Prints a summary (frames, dtype, size, compression, dose, speed) on stderr and the
        store's path on stdout.
        """
        from lowdose.errors import FormatError
        from lowdose.store.ingest import ingest_with_summary

        if float_policy not in ("refuse", "round"):
            raise FormatError(f"--float-policy {float_policy!r}: expected 'refuse' or 'round'")
        summary = ingest_with_summary(
            inputs,
            out,
            pixel_size_A=pixel_size_A,
            frame_rate_hz=frame_rate_hz,
            dose_e_per_px=dose_e_per_px,
            detector=detector,
            h5_dataset=h5_dataset,
            float_policy=float_policy,  # type: ignore[arg-type]
            chunk_frames=chunk_frames,
            batch_frames=batch_frames,
            progress=not quiet,
        )
        for line in summary.lines():  # for people, on stderr: stdout stays the store path alone
            typer.echo(line, err=True)
        typer.echo(str(summary.path))
