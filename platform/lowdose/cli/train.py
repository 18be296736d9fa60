"""``lowdose train``: train a denoiser on a SimulationSet from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""

    @app.command("train")
    def train_command(
        config_path: Path = typer.Argument(..., help="Training config YAML (kind 'train')."),
        out: Path = typer.Option(Path("lowdose-train"), "--out", help="Output directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint exactly."),
        scheduler: str = typer.Option(
            None, "--scheduler", help="Dask scheduler address: run one DDP rank per worker."
        ),
        workers: int = typer.Option(
            0, "--workers", "--n-workers", help="DDP ranks (Dask workers) to use; 0 = all."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", "--quiet", help="Hide the progress bar."),
    ) -> None:
        """Train a denoiser; write checkpoints, a JSON-lines log and a model artefact to OUT."""
        from lowdose.config import load_config
        from lowdose.training.config import TrainingConfig

        config = load_config(TrainingConfig, config_path)
        if scheduler:
            from lowdose.parallel.train import train_on_cluster

            result = train_on_cluster(
                config,
                out,
                scheduler=scheduler,
                n_workers=workers or None,
                resume=resume,
                config_path=str(config_path),
            )
        else:
            from lowdose.training.trainer import train

            result = train(config, out, resume=resume, progress=not no_progress, config_path=str(config_path))
        typer.echo(
            f"trained {result.steps} steps; best validation PSNR {result.best_validation_psnr_db:.2f} dB "
            f"at step {result.best_step}; artefact: {result.artefact}"
        )
