"""``lowdose simulate``: run a simulation grid into a SimulationSet (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command."""

    @app.command("simulate")
    def simulate_command(
        config_path: Path | None = typer.Argument(None, help="Grid config YAML (kind 'simulate')."),
        out: Path = typer.Option(..., "--out", help="Output SimulationSet store (PATH.zarr)."),
        preset: str | None = typer.Option(
            None, "--preset", help="Shipped grid: tiny, small, medium or paper-grid."
        ),
        scheduler: str | None = typer.Option(None, "--scheduler", help="Address of a running scheduler."),
        workers: int | None = typer.Option(
            None, "--workers", "--n-workers", min=1, help="LocalCluster worker processes."
        ),
        memory_limit: str = typer.Option("4GB", "--memory-limit", help="Memory limit per worker."),
        preview: bool = typer.Option(False, "--preview", help="Also write PATH.preview.png (contact sheet)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Simulate the grid on a Dask cluster; a re-run resumes where it stopped."""
        from lowdose.config import load_config
        from lowdose.errors import ConfigError
        from lowdose.parallel.cluster import connect
        from lowdose.parallel.simulate import prepare_store, run_grid
        from lowdose.physics.grid import SimulationGridConfig, load_preset

        if (config_path is None) == (preset is None):
            raise ConfigError("lowdose simulate: give exactly one of CONFIG.yaml or --preset")
        from dask.utils import parse_bytes

        try:  # before the store is made
            if memory_limit != "auto":
                parse_bytes(memory_limit)
        except ValueError:
            raise ConfigError(
                f"--memory-limit {memory_limit}: expected a size such as 4GB, 2.5GiB or 800MB (or auto)"
            ) from None
        if preset is not None:
            config = load_preset(preset)
        else:
            assert config_path is not None
            config = load_config(SimulationGridConfig, config_path)
        _, todo = prepare_store(config, out)
        if todo:
            with connect(
                scheduler=scheduler, n_workers=workers, memory_limit=memory_limit, quiet=quiet
            ) as client:
                summary = run_grid(config, out, client, progress=not quiet)
        else:  # nothing left: no cluster needed
            summary = run_grid(config, out, None, progress=not quiet)
        # a re-run that found every image done measured no throughput: no "0 images/hour"
        rate = f"({summary.images_per_hour:.0f} images/hour)" if summary.n_written else "(nothing left to do)"
        typer.echo(
            f"{summary.path}: {summary.n_written} images written, {summary.n_skipped} already done, "
            f"{summary.seconds:.1f} s {rate}"
        )
        if preview:
            from lowdose.evaluation.simulation_preview import write_contact_sheet
            from lowdose.store.simulation_set import open_simulation_set

            png = write_contact_sheet(open_simulation_set(out), out.with_name(out.name + ".preview.png"))
            typer.echo(str(png))

    @app.command("simulate-series")
    def simulate_series_command(
        out: Path = typer.Option(..., "--out", help="Output FrameSeries store (SERIES.zarr)."),
        frames: int = typer.Option(400, "--frames", help="Number of frames (40 frames/s)."),
        size: int = typer.Option(512, "--size", help="Frame size in pixels (square)."),
        seed: int = typer.Option(0, "--seed", help="Seed of dynamics, drift and noise."),
        particle: str = typer.Option("PtNp2", "--particle", help="Particle class PtNp1..PtNp4."),
        states: int = typer.Option(12, "--states", help="Distinct surface configurations (exit waves)."),
        defocus_nm: float = typer.Option(10.0, "--defocus-nm", help="C1 in nm (positive = overfocus)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Synthetic in-situ series: surface atoms appear, hop and vanish; drift; Poisson noise."""
        from lowdose.errors import ConfigError
        from lowdose.parallel.simulate_series import SeriesSpec, simulate_series
        from lowdose.physics.structures import PARTICLE_CLASSES

        if particle not in PARTICLE_CLASSES:
            raise ConfigError(f"--particle {particle!r}: expected one of {sorted(PARTICLE_CLASSES)}")
        if states < 1:
            raise ConfigError(f"--states {states}: expected at least 1")
        spec = SeriesSpec(
            n_frames=frames,
            size_px=size,
            seed=seed,
            particle=particle,
            n_states=states,
            defocus_nm=defocus_nm,
        )
        summary = simulate_series(out, spec, progress=not quiet)
        typer.echo(
            f"{summary.path}: {summary.n_written} frames written ({summary.n_frames} total, "
            f"{summary.n_states} distinct structures) in {summary.seconds:.1f} s"
        )
