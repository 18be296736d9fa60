"""``lowdose align``: integer drift shifts for a FrameSeries (raw counts untouched)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``align`` command."""

    @app.command("align")
    def align_command(
        series: Path = typer.Argument(..., help="FrameSeries store (SERIES.zarr)."),
        block_frames: int = typer.Option(
            40, "--block-frames", help="Frames summed per registration block (≥ 20)."
        ),
        reference: str = typer.Option("first", "--reference", help="'first' block or 'previous' block."),
        per_frame: str = typer.Option(
            "block", "--per-frame", help="'block' shifts or 'interpolate' between blocks."
        ),
    ) -> None:
        """Estimate drift by phase correlation of block sums; store per-frame integer shifts."""
        from lowdose.errors import LowdoseInputError
        from lowdose.store.align import align_series

        if reference not in ("first", "previous") or per_frame not in ("block", "interpolate"):
            raise LowdoseInputError("--reference must be first|previous and --per-frame block|interpolate")
        try:
            record = align_series(
                series,
                block_frames=block_frames,
                reference=reference,  # type: ignore[arg-type]
                per_frame=per_frame,  # type: ignore[arg-type]
            )
        except LowdoseInputError as err:
            # the library speaks of block_frames=N and "series": name the option and the file
            message = str(err).replace("block_frames=", "--block-frames ")
            if message == str(err) and str(series) in message:
                raise
            raise LowdoseInputError(message if str(series) in message else f"{series}: {message}") from None
        typer.echo(f"{series}: {record['n_blocks']} blocks, max |shift| {record['max_abs_shift_px']} px")
