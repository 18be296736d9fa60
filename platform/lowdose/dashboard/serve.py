"""Serve the dashboard for a catalog (used by ``lowdose dashboard`` and ``lowdose demo``)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from lowdose.errors import LowdoseInputError


def parse_basic_auth(value: str | None) -> Any:
    """``USER:PASS`` → ``{user: pass}``; an existing JSON file ``{user: pass}`` is passed as its path."""
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


OAUTH_PROVIDERS = ("auth0", "azure", "azurev2", "bitbucket", "generic", "github", "gitlab", "google", "okta")
"""OAuth providers Panel's server supports (``--oauth-provider``)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def auth_options(
    *,
    basic_auth: str | None = None,
    oauth_provider: str | None = None,
    oauth_key: str | None = None,
    oauth_secret: str | None = None,
    oauth_redirect_uri: str | None = None,
    oauth_extra_params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Check the authentication settings and return the matching ``panel.serve`` keywords.

    Basic auth (``USER:PASS`` or a JSON file of users) and OAuth (a provider with
    its client id and secret) exclude each other. Both get a fresh random cookie
    secret per server start; OAuth also gets a fresh key that encrypts the user's
    tokens in the cookie (when the ``cryptography`` package is installed).

    Raises
    ------
    LowdoseInputError
        Both kinds given, an unknown provider, or an OAuth provider without key/secret.
    """
    if basic_auth and oauth_provider:
        raise LowdoseInputError("--basic-auth and --oauth-provider exclude each other; choose one")
    options: dict[str, Any] = {}
    if basic_auth:
        options.update(basic_auth=parse_basic_auth(basic_auth), cookie_secret=secrets.token_hex(32))
    elif oauth_provider:
        if oauth_provider not in OAUTH_PROVIDERS:
            raise LowdoseInputError(
                f"--oauth-provider {oauth_provider!r}: expected one of {list(OAUTH_PROVIDERS)}"
            )
        missing = [
            flag
            for flag, value in (("--oauth-key", oauth_key), ("--oauth-secret", oauth_secret))
            if not value
        ]
        if missing:
            raise LowdoseInputError(
                f"--oauth-provider {oauth_provider}: also needs {' and '.join(missing)} "
                "(the client id and secret registered with the provider)"
            )
        options.update(
            oauth_provider=oauth_provider,
            oauth_key=oauth_key,
            oauth_secret=oauth_secret,
            cookie_secret=secrets.token_hex(32),
        )
        try:
            from cryptography.fernet import Fernet
        except ImportError:  # Panel then keeps the tokens signed but unencrypted in the cookie
            pass
        else:
            options["oauth_encryption_key"] = Fernet.generate_key().decode()
        if oauth_redirect_uri:
            options["oauth_redirect_uri"] = oauth_redirect_uri
        if oauth_extra_params:
            options["oauth_extra_params"] = dict(oauth_extra_params)
    elif oauth_key or oauth_secret or oauth_redirect_uri:
        raise LowdoseInputError("--oauth-key/--oauth-secret/--oauth-redirect-uri need --oauth-provider")
    return options


def serve_dashboard(
    catalog: str,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    basic_auth: str | None = None,
    show: bool = False,
    root: Path | None = None,
    allow_absolute: bool = False,
    oauth_provider: str | None = None,
    oauth_key: str | None = None,
    oauth_secret: str | None = None,
    oauth_redirect_uri: str | None = None,
    oauth_extra_params: dict[str, str] | None = None,
) -> None:
    """Serve the dashboard for ``catalog`` until interrupted.

    The catalog is opened once up front so a bad catalog fails fast with a
    one-line error instead of an empty page. The pages show catalog entries only:
    no URL or query parameter names a file. Listening beyond the loopback
    interface without basic auth or OAuth prints a warning.
    """
    import panel as pn

    from lowdose.dashboard.app import build_app
    from lowdose.store.catalog import open_catalog

    open_catalog(catalog, root=root, allow_absolute=allow_absolute)
    extra = auth_options(
        basic_auth=basic_auth,
        oauth_provider=oauth_provider,
        oauth_key=oauth_key,
        oauth_secret=oauth_secret,
        oauth_redirect_uri=oauth_redirect_uri,
        oauth_extra_params=oauth_extra_params,
    )
    if not 0 <= port <= 65535:
        raise LowdoseInputError(f"--port {port}: expected a TCP port 0..65535 (0: any free port)")
    if port == 0:
        # The browser's websocket must come from an allowed origin, which names the port: ask
        # the system for a free one first (the origins of port 0 would refuse every page).
        port = _free_port(address)
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]

    def page() -> Any:
        return build_app(catalog, root=str(root) if root else None, allow_absolute=allow_absolute)

    if address not in LOOPBACK and not extra:
        print(
            f"lowdose dashboard: warning: listening on {address} without --basic-auth or "
            "--oauth-provider; anyone who can reach this port can browse the catalog",
            file=sys.stderr,
            flush=True,
        )
    try:
        server = pn.serve(
            {"/": page},
            port=port,
            address=address,
            websocket_origin=origins,
            show=show,
            start=False,
            verbose=False,
            title="lowdose",
            **extra,
        )
    except OSError as err:
        raise LowdoseInputError(
            f"--address {address} --port {port}: cannot listen ({err.strerror})"
        ) from None
    # printed once the port is ours: a port in use is one error line, not a URL and then an error
    url = f"http://{address}:{server.port}/"
    print(f"lowdose dashboard: {url}  (catalog {catalog}; Ctrl-C to stop)", flush=True)
    server.start()
    server.io_loop.start()


def _free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the system's pick for port 0)."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            return int(probe.getsockname()[1])
    except OSError as err:
        raise LowdoseInputError(f"--address {address}: cannot listen ({err.strerror})") from None
