"""``lowdose version``: package and key dependency versions."""

from __future__ import annotations

import platform as std_platform
from importlib.metadata import PackageNotFoundError, version

import typer

KEY_PACKAGES = (
    "lowdose",
    "numpy",
    "scipy",
    "xarray",
    "zarr",
    "dask",
    "distributed",
    "torch",
    "abtem",
    "ase",
    "intake",
    "pydantic",
    "panel",
)


def package_versions() -> dict[str, str]:
    """Return installed versions of lowdose and its key dependencies."""
    found = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = std_platform.python_version()
    return found


def register(app: typer.Typer) -> None:
    """Add the ``version`` command."""

    @app.command("version")
    def version_command() -> None:
        """Print lowdose's version and those of its key dependencies."""
        for name, ver in package_versions().items():
            typer.echo(f"{name:12s} {ver}")
