"""``lowdose train``: train a denoiser on a SimulationSet from a YAML config."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

EARLIER_RUN = (
    "checkpoint",
    "checkpoint.old",
    "checkpoint.tmp",
    "log.jsonl",
    "config.yaml",
    "best.safetensors",
    "model",
)
"""What a training run writes into OUT: any of them there means an earlier run."""


def earlier_run(out: Path) -> list[str]:
    """The files of an earlier training run in ``out`` (none for a new or empty folder)."""
    from lowdose.store.location import check_output_folder

    check_output_folder(out)
    return [name for name in EARLIER_RUN if (out / name).exists()]


def refuse_earlier_run(out: Path, found: list[str]) -> None:
    """One line naming OUT, what it holds and the ways on (--resume only when there is a checkpoint)."""
    from lowdose.errors import LowdoseInputError

    shown = ", ".join(name + ("/" if (out / name).is_dir() else "") for name in found)
    has_checkpoint = any((out / name / "state.json").exists() for name in ("checkpoint", "checkpoint.old"))
    resume = "--resume to continue it, " if has_checkpoint else ""
    raise LowdoseInputError(
        f"--out {out}: holds an earlier training run ({shown}); use {resume}a new --out, "
        "or --overwrite to start over"
    )


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""

    @app.command("train")
    def train_command(
        config_path: Path = typer.Argument(..., help="Training config YAML (kind 'train')."),
        out: Path = typer.Option(Path("lowdose-train"), "--out", help="Output directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint exactly."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Delete an earlier run's files in OUT and start over."
        ),
        scheduler: str = typer.Option(
            None, "--scheduler", help="Dask scheduler address: run one DDP rank per worker."
        ),
        workers: int = typer.Option(
            0, "--workers", "--n-workers", help="DDP ranks (Dask workers) to use; 0 = all."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", "--quiet", help="Hide the progress bar."),
    ) -> None:
        """Train a denoiser; write checkpoints, a JSON-lines log and a model artefact to OUT.

        An OUT holding an earlier run is refused unless --resume continues it or
        --overwrite starts over; a new or empty folder is fine.
        """
        from lowdose.config import load_config
        from lowdose.errors import LowdoseInputError
        from lowdose.training.config import TrainingConfig

        if resume and overwrite:
            raise LowdoseInputError("--resume and --overwrite: give one (continue OUT or start it over)")
        found = earlier_run(out)  # also refuses an OUT that is a file, in a zarr store or unwritable
        if resume:  # --resume continues the run found there
            found = []
        if found and not overwrite:
            refuse_earlier_run(out, found)
        config = load_config(TrainingConfig, config_path)
        for name in found:  # --overwrite, once the config is known to be valid
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
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
