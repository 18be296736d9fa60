"""``lowdose dashboard``: serve the Panel dashboard for a catalog (127.0.0.1 by default)."""

from __future__ import annotations

from pathlib import Path

import typer


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
        from lowdose.dashboard.serve import serve_dashboard

        serve_dashboard(
            catalog,
            port=port,
            address=address,
            basic_auth=basic_auth,
            show=show,
            root=default_root(catalog, root),
            allow_absolute=allow_absolute,
        )
