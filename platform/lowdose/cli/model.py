"""``lowdose model import``: bring a foreign PyTorch checkpoint in as a safetensors artefact.

This is the only way a pickle-based ``.pt``/``.pth`` file enters lowdose: it is read
with ``torch.load(weights_only=True)`` (plain tensors only; any other object is
refused without being built), checked against the named architecture, and written
as ``model.safetensors`` + ``model.yaml``, which every other command then loads.
"""

from __future__ import annotations

from pathlib import Path

import typer


def parse_settings(items: list[str]) -> dict[str, object]:
    """``["depth=3", "bias=false"]`` → ``{"depth": 3, "bias": False}`` (values parsed as YAML scalars)."""
    import yaml

    from lowdose.errors import LowdoseInputError

    settings: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LowdoseInputError(f"--config {item!r}: expected KEY=VALUE")
        try:
            settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise LowdoseInputError(f"--config {item!r}: the value is not a YAML scalar") from None
    return settings


def register(app: typer.Typer) -> None:
    """Add the ``model`` command group."""
    group = typer.Typer(help="Model artefacts (safetensors + model.yaml).", no_args_is_help=True)
    app.add_typer(group, name="model")

    @group.command("import")
    def import_checkpoint(
        checkpoint: Path = typer.Argument(..., help="PyTorch .pt/.pth file holding a state dict."),
        architecture: str = typer.Option(
            ..., "--architecture", help="Registered model: unet, dncnn, small_unet, blindspot, compact."
        ),
        config: list[str] = typer.Option([], "--config", help="Architecture setting KEY=VALUE (repeatable)."),
        out: Path = typer.Option(..., "--out", help="Artefact directory to write."),
    ) -> None:
        """Import a state dict with torch.load(weights_only=True) and save it as a safetensors artefact."""
        import hashlib
        import shlex
        import sys

        import torch

        from lowdose.models.artefact import import_torch_checkpoint, save_artefact

        torch.set_num_threads(1)
        settings = parse_settings(config)
        model = import_torch_checkpoint(checkpoint, architecture, **settings)
        digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        save_artefact(
            out,
            model,
            name=architecture,
            model_config=settings,
            training={"imported_from": str(checkpoint), "imported_sha256": digest},
            reproduce=[shlex.join(["lowdose", *sys.argv[1:]])],
        )
        typer.echo(f"{out}: {architecture} artefact imported from {checkpoint} (weights only)")
