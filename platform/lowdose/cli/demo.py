"""``lowdose demo``: the whole platform on an embedded default, end to end."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.demo import DEMO_FRAMES, DEMO_TTA


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""

    @app.command("demo")
    def demo(
        workdir: Path = typer.Option(Path("lowdose-demo"), "--workdir", help="Where the demo writes."),
        frames: int = typer.Option(DEMO_FRAMES, "--frames", min=1, help="Frames in the synthetic series."),
        serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the dashboard at the end."),
        port: int = typer.Option(5006, "--port", help="Dashboard port."),
        workers: int | None = typer.Option(
            None, "--workers", "--n-workers", min=1, help="Dask workers (default: auto)."
        ),
        tta: int = typer.Option(
            DEMO_TTA, "--tta", help="Average the denoiser over 1, 2, 4 or 8 flips/transposes of each frame."
        ),
    ) -> None:
        """Simulate a synthetic in-situ series, denoise and analyse it on Dask, catalog it, serve it.

        Draws WORKDIR/demo.png (raw frame | denoised | likelihood map); re-running reuses the work folder.
        """
        from lowdose.demo import run_demo

        summary = run_demo(workdir, n_frames=frames, n_workers=workers, tta=tta)
        if serve:
            from lowdose.dashboard.serve import serve_dashboard

            serve_dashboard(str(summary.catalog), port=port, allow_absolute=False)
