"""``lowdose config``: check config files before a long run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group."""
    group = typer.Typer(help="Check and print lowdose YAML configs.", no_args_is_help=True)

    @group.command("validate")
    def validate(
        path: Path = typer.Argument(..., help="YAML config file."),
        kind: str = typer.Option("base", "--kind", help="Config kind (see `lowdose config kinds`)."),
    ) -> None:
        """Validate a config file; print it back with defaults filled in."""
        from lowdose.config import config_class, load_config

        config = load_config(config_class(kind), path)
        typer.echo(config.to_yaml(), nl=False)

    @group.command("kinds")
    def kinds() -> None:
        """List the config kinds lowdose knows."""
        from lowdose.config import CONFIG_KINDS

        for name, target in CONFIG_KINDS.items():
            typer.echo(f"{name:12s} {target}")

    app.add_typer(group, name="config")
