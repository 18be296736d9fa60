"""``lowdose dashboard``: serve the Panel dashboard for a catalog (127.0.0.1; basic auth or OAuth)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` command."""
    from lowdose.cli.catalog import catalog_option, default_root, require_catalog

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
        oauth_provider: str | None = typer.Option(
            None,
            "--oauth-provider",
            envvar="LOWDOSE_OAUTH_PROVIDER",
            help="Log in through OAuth: github, gitlab, google, azure, okta, auth0, generic, ...",
        ),
        oauth_key: str | None = typer.Option(
            None, "--oauth-key", envvar="LOWDOSE_OAUTH_KEY", help="OAuth client id."
        ),
        oauth_secret: str | None = typer.Option(
            None, "--oauth-secret", envvar="LOWDOSE_OAUTH_SECRET", help="OAuth client secret."
        ),
        oauth_redirect_uri: str | None = typer.Option(
            None,
            "--oauth-redirect-uri",
            envvar="LOWDOSE_OAUTH_REDIRECT_URI",
            help="Public URL the provider redirects back to (behind a proxy).",
        ),
    ) -> None:
        """Serve the frame-series dashboard for a catalog until interrupted."""
        from lowdose.dashboard.serve import serve_dashboard

        require_catalog(catalog)
        serve_dashboard(
            catalog,
            port=port,
            address=address,
            basic_auth=basic_auth,
            show=show,
            root=default_root(catalog, root),
            allow_absolute=allow_absolute,
            oauth_provider=oauth_provider,
            oauth_key=oauth_key,
            oauth_secret=oauth_secret,
            oauth_redirect_uri=oauth_redirect_uri,
        )
