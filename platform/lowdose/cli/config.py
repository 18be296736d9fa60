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
        kind: str | None = typer.Option(
            None, "--kind", help="Config kind: pipeline, train, simulate, analysis (`lowdose config kinds`)."
        ),
    ) -> None:
        """Validate a config file; print it back with defaults filled in."""
        from lowdose.config import CONFIG_KINDS, config_class, load_config
        from lowdose.errors import ConfigError

        try:
            config = load_config(config_class(kind or "base"), path)
        except ConfigError as err:
            if kind is not None:
                raise
            # Without --kind only the shared base fields are known: say so, or every key looks wrong.
            kinds = "|".join(name for name in CONFIG_KINDS if name != "base")
            raise ConfigError(f"{err}; checked as kind 'base' (no --kind): pass --kind {kinds}") from None
        if kind == "train":
            # The model options and init_weights are only known to be right once the model
            # is built (imports torch; a few seconds).
            from lowdose.training.trainer import check_model

            check_model(config)  # type: ignore[arg-type]
        typer.echo(config.to_yaml(), nl=False)

    @group.command("kinds")
    def kinds() -> None:
        """List the config kinds lowdose knows."""
        from lowdose.config import CONFIG_KINDS

        for name, target in CONFIG_KINDS.items():
            typer.echo(f"{name:12s} {target}")

    app.add_typer(group, name="config")
