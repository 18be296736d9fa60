"""Serve the dashboard for a catalog (used by ``lowdose dashboard`` and ``lowdose demo``)."""

from __future__ import annotations

import secrets
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


def serve_dashboard(
    catalog: str,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    basic_auth: str | None = None,
    show: bool = False,
    root: Path | None = None,
    allow_absolute: bool = False,
) -> None:
    """Serve the dashboard for ``catalog`` until interrupted.

    The catalog is opened once up front so a bad catalog fails fast with a
    one-line error instead of an empty page.
    """
    import panel as pn

    from lowdose.dashboard.app import build_app
    from lowdose.store.catalog import open_catalog

    open_catalog(catalog, root=root, allow_absolute=allow_absolute)
    auth = parse_basic_auth(basic_auth)
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]

    def page() -> Any:
        return build_app(catalog, root=str(root) if root else None, allow_absolute=allow_absolute)

    extra: dict[str, Any] = {}
    if auth is not None:
        extra.update(basic_auth=auth, cookie_secret=secrets.token_hex(32))
    print(f"lowdose dashboard: http://{address}:{port}/  (catalog {catalog}; Ctrl-C to stop)", flush=True)
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
