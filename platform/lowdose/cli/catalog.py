"""``lowdose catalog``: list, show, search and edit Intake catalogs of lowdose products.

The catalog file comes from ``--catalog``, else the ``LOWDOSE_CATALOG`` environment
variable, else ``catalogs/demo.yaml``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

DEFAULT_CATALOG = "catalogs/demo.yaml"
"""Catalog used when neither ``--catalog`` nor ``LOWDOSE_CATALOG`` is given."""


def parse_criterion(text: str) -> tuple[str, Any]:
    """Parse a CLI search term into ``(key, value)`` for :meth:`LowdoseCatalog.search`.

    ``KEY=VALUE`` (equality, or containment in a ``[lo, hi]`` range),
    ``KEY=LO..HI`` (closed range), ``KEY>=VALUE`` and ``KEY<=VALUE`` (open ranges).
    """
    from lowdose.errors import LowdoseInputError

    for op in (">=", "<="):
        if op in text:
            key, _, value = text.partition(op)
            if key and value:
                return key.strip(), (value.strip(), None) if op == ">=" else (None, value.strip())
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise LowdoseInputError(f"search term {text!r}: expected KEY=VALUE, KEY=LO..HI, KEY>=V or KEY<=V")
    if ".." in value:
        lo, _, hi = value.partition("..")
        return key.strip(), (lo.strip() or None, hi.strip() or None)
    return key.strip(), value.strip()


def default_root(catalog: str, root: Path | None) -> Path | None:
    """The trusted root: ``--root``, else ``LOWDOSE_CATALOG_ROOT``, else (demo catalog) the working folder.

    The shipped ``catalogs/demo.yaml`` points at ``../lowdose-demo/``, one level above
    its folder; the repository (the working folder) is trusted for it.
    """
    import os

    if root is not None:
        return root
    env = os.environ.get("LOWDOSE_CATALOG_ROOT")
    if env:
        return Path(env)
    if catalog == DEFAULT_CATALOG and Path(catalog).exists():
        return Path.cwd()
    return None


def require_catalog(catalog: str) -> None:
    """Refuse the default catalog when it is not here, saying how to name one.

    ``catalogs/demo.yaml`` is relative to the working folder (the repository); run
    anywhere else without ``--catalog`` it is simply missing.
    """
    from lowdose.store.catalog_safety import CatalogError

    if catalog == DEFAULT_CATALOG and not Path(catalog).exists():
        raise CatalogError(
            f"{catalog}: catalog file not found in {Path.cwd()} (the default, relative to the repository); "
            "pass --catalog FILE (e.g. lowdose-demo/catalog.yaml) or set LOWDOSE_CATALOG"
        )


def catalog_option() -> Any:
    """The shared ``--catalog`` option."""
    return typer.Option(
        DEFAULT_CATALOG, "--catalog", "-c", envvar="LOWDOSE_CATALOG", help="Catalog YAML file (or URL)."
    )


def register(app: typer.Typer) -> None:
    """Add the ``catalog`` command group."""
    group = typer.Typer(help="Browse and edit Intake catalogs of lowdose products.", no_args_is_help=True)
    root_help = "Trusted folder enclosing the catalog: entries may point anywhere inside it."
    abs_help = "Trust absolute paths and URLs in the catalog."

    def _open(catalog: str, root: Path | None, allow_absolute: bool) -> Any:
        from lowdose.store.catalog import open_catalog

        require_catalog(catalog)
        return open_catalog(catalog, root=default_root(catalog, root), allow_absolute=allow_absolute)

    @group.command("list")
    def list_entries(
        catalog: str = catalog_option(),
        kind: str | None = typer.Option(None, "--kind", help="Only entries of this kind, e.g. FrameSeries."),
        root: Path | None = typer.Option(None, "--root", help=root_help),
        allow_absolute: bool = typer.Option(False, "--allow-absolute", help=abs_help),
    ) -> None:
        """List the entries of a catalog: name, kind, and the key metadata."""
        cat = _open(catalog, root, allow_absolute)
        for name in cat.list(kind):
            meta = cat.entries[name].metadata
            keys = ("material", "dose_e_per_px", "frame_rate_hz", "n_frames", "model_id", "series")
            extra = " ".join(f"{k}={meta[k]}" for k in keys if k in meta)
            typer.echo(f"{name:32s} {meta['kind']:15s} {extra}".rstrip())

    @group.command("show")
    def show(
        name: str = typer.Argument(..., help="Entry name."),
        catalog: str = catalog_option(),
        root: Path | None = typer.Option(None, "--root", help=root_help),
        allow_absolute: bool = typer.Option(False, "--allow-absolute", help=abs_help),
    ) -> None:
        """Print everything the catalog says about one entry (JSON)."""
        cat = _open(catalog, root, allow_absolute)
        typer.echo(json.dumps(cat.describe(name), indent=2, default=str))

    @group.command("search")
    def search(
        terms: list[str] = typer.Argument(
            ..., help="KEY=VALUE, KEY=LO..HI, KEY>=V or KEY<=V (all must match)."
        ),
        catalog: str = catalog_option(),
        root: Path | None = typer.Option(None, "--root", help=root_help),
        allow_absolute: bool = typer.Option(False, "--allow-absolute", help=abs_help),
    ) -> None:
        """Print the names of entries whose metadata match every term."""
        criteria = dict(parse_criterion(t) for t in terms)
        cat = _open(catalog, root, allow_absolute)
        for name in cat.search(**criteria):
            typer.echo(name)

    @group.command("add")
    def add(
        name: str = typer.Argument(..., help="Entry name."),
        path: Path = typer.Argument(..., help="Product: .zarr store, .parquet table or model folder."),
        catalog: str = catalog_option(),
        kind: str | None = typer.Option(None, "--kind", help="Product kind (inferred when omitted)."),
        series: str | None = typer.Option(None, "--series", help="FrameSeries entry this derives from."),
        meta: list[str] = typer.Option([], "--meta", help="Extra metadata KEY=VALUE (repeatable)."),
        allow_absolute: bool = typer.Option(False, "--allow-absolute", help="Record by absolute path."),
        replace: bool = typer.Option(False, "--replace", help="Replace an entry of the same name."),
    ) -> None:
        """Register a product (metadata read from it) in a catalog, creating the catalog if needed."""
        from lowdose.errors import LowdoseInputError
        from lowdose.store.catalog import product_entry, register_products

        extra = {}
        for item in meta:
            key, sep, text = item.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", key.strip()):
                raise LowdoseInputError(f"--meta {item!r}: expected KEY=VALUE (KEY: letters, digits, _ . -)")
            extra[key.strip()] = text.strip()
        entry = product_entry(name, path, kind, extra, series=series, source="lowdose catalog add")
        register_products(catalog, [entry], allow_absolute=allow_absolute, replace=replace)
        typer.echo(f"registered {name} in {catalog}")

    @group.command("remove")
    def remove(
        names: list[str] = typer.Argument(..., help="Entry names."),
        catalog: str = catalog_option(),
    ) -> None:
        """Remove entries from a catalog (the products themselves are not touched)."""
        from lowdose.store.catalog import remove_entries

        remove_entries(catalog, names)
        typer.echo(f"removed {', '.join(names)} from {catalog}")

    app.add_typer(group, name="catalog")
