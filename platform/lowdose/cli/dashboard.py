"""``lowdose dashboard``: serve the Panel dashboard for a catalog (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def parse_basic_auth(value: str | None) -> Any:
    """``USER:PASS`` → ``{user: pass}``; an existing JSON file ``{user: pass}`` is passed as its path."""
    from lowdose.errors import LowdoseInputError

    if not value:
        return None
    if Path(value).is_file():
        return str(Path(value).resolve())
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise LowdoseInputError(
            f"--basic-auth {value!r}: expected USER:PASS or a JSON file of {{user: password}}"
        )
    return {user: password}


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` command."""
    from lowdose.cli.catalog import catalog_option, default_root

    @app.command("dashboard")
    def dashboard(
        catalog: str = catalog_option(),
        port: int = typer.Option(5006, "--port", help="TCP port (0: any free port)."),
        address: str = typer.Option("127.0.0.1", "--address", help="Interface to listen on."),
        basic_auth: str | None = typer.Option(
            None,
            "--basic-auth",
            envvar="LOWDOSE_DASHBOARD_AUTH",
            help="USER:PASS, or a JSON file {user: password}.",
        ),
        show: bool = typer.Option(False, "--show/--no-show", help="Open a browser tab."),
        root: Path | None = typer.Option(None, "--root", help="Trusted folder enclosing the catalog."),
        allow_absolute: bool = typer.Option(False, "--allow-absolute", help="Trust absolute paths/URLs."),
    ) -> None:
        """Serve the frame-series dashboard for a catalog until interrupted."""
        import secrets

        import panel as pn

        from lowdose.dashboard.app import build_app
        from lowdose.errors import LowdoseInputError
        from lowdose.store.catalog import open_catalog

        trusted = default_root(catalog, root)
        open_catalog(catalog, root=trusted, allow_absolute=allow_absolute)  # fail fast on a bad catalog
        auth = parse_basic_auth(basic_auth)
        origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]

        def page() -> Any:
            return build_app(catalog, root=str(trusted) if trusted else None, allow_absolute=allow_absolute)

        extra: dict[str, Any] = {}
        if auth is not None:
            extra.update(basic_auth=auth, cookie_secret=secrets.token_hex(32))
        typer.echo(f"lowdose dashboard: http://{address}:{port}/  (catalog {catalog}; Ctrl-C to stop)")
        try:
            pn.serve(
                {"/": page},
                port=port,
                address=address,
                websocket_origin=origins,
                show=show,
                title="lowdose",
                **extra,
            )
        except OSError as err:
            raise LowdoseInputError(
                f"--address {address} --port {port}: cannot listen ({err.strerror})"
            ) from None
