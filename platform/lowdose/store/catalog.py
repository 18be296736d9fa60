"""Intake v2 catalogs of lowdose products: write, update, read safely, query by metadata.

A lowdose catalog is a plain Intake v2 YAML file (``version: 2``, ``entries``,
``data``): one entry per product (SimulationSet, FrameSeries, DenoisedSeries,
ColumnTable, FrameTable, model artefact) with searchable metadata (``kind``,
material, dose_e_per_px, frame_rate_hz, pixel_size_A, defocus_range_nm, model_id,
created, source, and ``series``, the FrameSeries entry a product derives from).
Product locations are written relative to the catalog's folder
(``{CATALOG_DIR}/...``), so a folder holding a catalog and its products can be
moved or shared, and a catalog at an ``s3://`` URL reads its products through
fsspec.

Reading never executes code from the file: the YAML is parsed with a safe loader
and checked against lowdose's allowlist of readers and datatypes
(:mod:`lowdose.store.catalog_safety`) before any intake object is built. Writing
holds a lock file and replaces the catalog atomically (temp file + rename).

This module never imports torch, and dask only when a Dask dataframe is asked for.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import posixpath
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import yaml

from lowdose.store.catalog_metadata import now_utc, product_metadata
from lowdose.store.catalog_safety import (
    ALLOWED_READERS,
    CATALOG_DIR_PREFIX,
    CATALOG_FORMAT_VERSION,
    DASK_PARQUET,
    KIND_READERS,
    NAME_PATTERN,
    PANDAS_PARQUET,
    CatalogError,
    ProductKind,
    ValidEntry,
    climb_of,
    has_scheme,
    join_location,
    validate_catalog_dict,
)

RUN_OUTPUTS: dict[str, ProductKind] = {
    "denoised.zarr": ProductKind.DENOISED_SERIES,
    "columns.parquet": ProductKind.COLUMN_TABLE,
    "frames.parquet": ProductKind.FRAME_TABLE,
}
"""Files a pipeline run writes into its output folder, and what they are."""


def averaged_table_frames(filename: str, table: str) -> int | None:
    """``N`` of a run's time-averaged table ``<table>_avgN.parquet``; None for any other file name."""
    prefix, suffix = f"{table}_avg", ".parquet"
    if not (filename.startswith(prefix) and filename.endswith(suffix)):
        return None
    n = filename[len(prefix) : -len(suffix)]
    return int(n) if n.isdigit() else None


_ARRAY_LAYOUTS = {
    ProductKind.SIMULATION_SET: "SimulationSet",
    ProductKind.FRAME_SERIES: "FrameSeries",
    ProductKind.DENOISED_SERIES: "DenoisedSeries",
}


@dataclass(frozen=True)
class CatalogEntry:
    """One product to put in a catalog.

    Build it with :func:`product_entry` to harvest the metadata from the product
    itself, or directly when the product is not readable from here (e.g. remote).
    """

    name: str
    """Entry name: letters, digits, ``_``, ``.``, ``-``."""
    kind: ProductKind
    location: str
    """Local path or URL of the product (a .zarr store, a .parquet file, a model folder)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Searchable metadata (units in the names). ``kind`` is added automatically."""
    dataframe: str = "pandas"
    """For tables: ``pandas`` or ``dask`` (the reader written into the catalog)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for remote locations (never credentials: use the environment for those)."""


def product_kind(kind: ProductKind | str) -> ProductKind:
    """``kind`` as a :class:`ProductKind`; an unknown name is a CatalogError listing the kinds."""
    try:
        return ProductKind(kind)
    except ValueError:
        kinds = ", ".join(str(k) for k in ProductKind)
        raise CatalogError(f"kind {kind!r}: expected one of {kinds}") from None


def product_entry(
    name: str,
    path: str | Path,
    kind: ProductKind | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    series: str | None = None,
    source: str | None = None,
) -> CatalogEntry:
    """Describe the local product at ``path`` as a catalog entry, reading its metadata from disk.

    Parameters
    ----------
    name
        Entry name in the catalog.
    path
        The product: a zarr store, a Parquet table, or a model folder (``model.yaml``).
    kind
        Product kind; inferred from the product when omitted.
    metadata
        Extra metadata; overrides what was harvested.
    series
        Name of the FrameSeries entry this product derives from (links products in the dashboard).
    source
        Free text: the command or files that produced it.
    """
    if kind is not None:
        kind = product_kind(kind)  # a misspelt kind is named before the product is read
    meta = product_metadata(path)
    found = meta.pop("kind", None)
    if kind is None and found is None:
        raise CatalogError(f"{path}: cannot tell what kind of product this is; pass kind=")
    chosen = product_kind(kind if kind is not None else found)
    if found is not None and kind is not None and str(found) != str(chosen):
        raise CatalogError(f"{path}: the product says it is a {found}, not a {chosen}")
    meta.setdefault("created", now_utc())
    if series is not None:
        meta["series"] = series
    if source is not None:
        meta["source"] = source
    meta.update(metadata or {})
    location = str(path) if has_scheme(str(path)) else str(Path(path).resolve())
    return CatalogEntry(name=name, kind=chosen, location=location, metadata=meta)


class LowdoseCatalog:
    """A validated lowdose catalog: list, describe, search and open its entries.

    Obtain one with :func:`open_catalog`. Entries are opened lazily: zarr stores as
    dask-backed :class:`xarray.Dataset` (validated against their lowdose layout),
    tables as pandas (or Dask) dataframes, model artefacts as
    :class:`~lowdose.store.catalog_readers.ModelArtefact`.
    """

    def __init__(
        self,
        source: str,
        base: str,
        entries: Mapping[str, ValidEntry],
        metadata: Mapping[str, Any],
        aliases: Mapping[str, str],
        trusted: str | None = None,
    ):
        self.source = source
        """Where the catalog file is (path or URL)."""
        self.base = base
        """The catalog's folder: relative product locations resolve against it."""
        self.trusted = trusted
        """Local folder that relative products must really (symlinks resolved) lie in; None: no check."""
        self.entries = dict(entries)
        self.metadata = dict(metadata)
        self.aliases = dict(aliases)

    def __repr__(self) -> str:
        return f"LowdoseCatalog({self.source!r}, {len(self.entries)} entries)"

    def __contains__(self, name: object) -> bool:
        return name in self.entries or name in self.aliases

    def __len__(self) -> int:
        return len(self.entries)

    def _entry(self, name: str) -> ValidEntry:
        key = self.aliases.get(name, name)
        try:
            return self.entries[key]
        except KeyError:
            raise CatalogError(
                f"{self.source}: no entry {name!r}; entries are {sorted(self.entries)}"
            ) from None

    def list(self, kind: ProductKind | str | None = None) -> list[str]:
        """Entry names, in catalog order, optionally only those of one ``kind``."""
        if kind is None:
            return list(self.entries)
        wanted = product_kind(kind)
        return [n for n, e in self.entries.items() if e.kind == wanted]

    def location(self, name: str) -> str:
        """The resolved location (local path or URL) of entry ``name``."""
        entry = self._entry(name)
        if entry.location.startswith(CATALOG_DIR_PREFIX):
            return join_location(self.base, entry.location[len(CATALOG_DIR_PREFIX) :])
        return entry.location

    def _check_inside(self, entry: ValidEntry, url: str) -> None:
        """Refuse a relative product that a symlink takes outside the trusted folder."""
        if self.trusted is None or not entry.location.startswith(CATALOG_DIR_PREFIX) or has_scheme(url):
            return
        real, trusted = os.path.realpath(url), os.path.realpath(self.trusted)
        if os.path.commonpath([real, trusted]) != trusted:
            raise CatalogError(
                f"{self.source}: entry {entry.name!r} location {entry.location!r} resolves to {real} "
                f"through a symbolic link, outside {trusted}; pass allow_absolute=True "
                "(CLI: --allow-absolute) to trust it"
            )

    def describe(self, name: str) -> dict[str, Any]:
        """Everything the catalog says about entry ``name`` (plain data)."""
        entry = self._entry(name)
        return {
            "name": entry.name,
            "kind": str(entry.kind),
            "location": self.location(name),
            "reader": entry.reader,
            "metadata": dict(entry.metadata),
        }

    def search(self, **criteria: Any) -> builtins.list[str]:
        """Names of entries whose metadata match every criterion.

        A criterion ``key=value`` matches metadata equal to ``value`` (strings
        compared case-insensitively, numbers with a relative tolerance of 1e-6,
        numeric strings as numbers), a list containing it, or a ``[lo, hi]``
        range (e.g. ``defocus_range_nm``) that contains it. A tuple ``(lo, hi)``
        matches numeric metadata inside the closed interval (``None`` = open).
        ``name`` and ``kind`` are searchable like metadata. A key that no entry carries
        is a :class:`CatalogError` naming the searchable keys (a typo is not "no match").

        Examples
        --------
        >>> cat.search(kind="FrameSeries", dose_e_per_px=0.45)  # doctest: +SKIP
        >>> cat.search(frame_rate_hz=(100, None), material="Pt/CeO2")  # doctest: +SKIP
        """
        known = {"name", "kind"}.union(*(entry.metadata for entry in self.entries.values()))
        unknown = sorted(set(criteria) - known)
        if unknown and self.entries:
            raise CatalogError(
                f"{self.source}: no entry has metadata {unknown}; searchable keys are {sorted(known)}"
            )
        found = []
        for name, entry in self.entries.items():
            fields = {**entry.metadata, "name": name, "kind": str(entry.kind)}
            if all(key in fields and _matches(fields[key], want) for key, want in criteria.items()):
                found.append(name)
        return found

    def products_of(self, series: str) -> dict[str, builtins.list[str]]:
        """Entries linked to the FrameSeries entry ``series`` (metadata ``series``), grouped by kind."""
        self._entry(series)
        linked: dict[str, builtins.list[str]] = {}
        for name, entry in self.entries.items():
            if entry.metadata.get("series") == series:
                linked.setdefault(str(entry.kind), []).append(name)
        return linked

    def reader(self, name: str, dataframe: str | None = None) -> Any:
        """An Intake reader for entry ``name``, built from the allowlisted classes only."""
        from intake.readers import datatypes, readers

        from lowdose.store.catalog_readers import ModelArtefactReader

        entry = self._entry(name)
        reader_name = entry.reader
        if dataframe is not None and entry.kind in (ProductKind.COLUMN_TABLE, ProductKind.FRAME_TABLE):
            reader_name = {"pandas": PANDAS_PARQUET, "dask": DASK_PARQUET}.get(dataframe, "")
            if not reader_name:
                raise CatalogError(f"dataframe must be 'pandas' or 'dask', got {dataframe!r}")
        url = self.location(name)
        self._check_inside(entry, url)
        options = entry.storage_options or None
        data_classes = {
            "intake.readers.datatypes:Zarr": datatypes.Zarr,
            "intake.readers.datatypes:Parquet": datatypes.Parquet,
            "intake.readers.datatypes:YAMLFile": datatypes.YAMLFile,
        }
        reader_classes = {
            "intake.readers.readers:XArrayDatasetReader": readers.XArrayDatasetReader,
            PANDAS_PARQUET: readers.PandasParquet,
            DASK_PARQUET: readers.DaskParquet,
            "lowdose.store.catalog_readers:ModelArtefactReader": ModelArtefactReader,
        }
        assert set(reader_classes) == set(ALLOWED_READERS)
        data = data_classes[entry.datatype](url=url, storage_options=options)
        kwargs = dict(entry.reader_kwargs)
        return reader_classes[reader_name](data, metadata=dict(entry.metadata), **kwargs)

    def open(self, name: str, *, dataframe: str | None = None) -> Any:
        """Open entry ``name`` lazily.

        Parameters
        ----------
        name
            Entry name (or alias).
        dataframe
            For tables, ``"pandas"`` or ``"dask"``; default: what the catalog says.

        Returns
        -------
        xarray.Dataset, pandas.DataFrame, dask.dataframe.DataFrame or ModelArtefact

        Raises
        ------
        StoreError
            If the product is missing, unreadable, or not of the layout the entry claims.
        """
        from lowdose.errors import StoreError

        entry = self._entry(name)
        where = f"{self.source}: entry {name!r} ({self.location(name)})"
        try:
            with warnings.catch_warnings():
                # stores written without consolidated metadata are fine; xarray warns about the fallback
                warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
                value = self.reader(name, dataframe=dataframe).read()
        except (FileNotFoundError, OSError, KeyError, ValueError, TypeError) as err:
            if isinstance(err, StoreError):
                raise
            raise StoreError(f"{where}: cannot open ({type(err).__name__}: {err})") from None
        except Exception as err:  # zarr/pyarrow raise their own error types for missing stores
            raise StoreError(f"{where}: cannot open ({type(err).__name__}: {err})") from None
        layout = _ARRAY_LAYOUTS.get(entry.kind)
        if layout is not None:
            from lowdose.store.schema import Layout, validate

            validate(value, Layout(layout), source=where)
        return value


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(have: Any, want: Any) -> bool:
    a, b = _as_number(have), _as_number(want)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return str(have).casefold() == str(want).casefold()


def _matches(have: Any, want: Any) -> bool:
    if isinstance(want, tuple):
        lo, hi = (_as_number(w) if w is not None else None for w in want)
        value = _as_number(have)
        if value is None:
            return False
        return (lo is None or value >= lo) and (hi is None or value <= hi)
    if isinstance(have, list):
        numbers = [_as_number(h) for h in have]
        target = _as_number(want)
        if len(have) == 2 and target is not None and None not in numbers:
            lo, hi = sorted(n for n in numbers if n is not None)
            if lo <= target <= hi:
                return True
        return any(_equal(h, want) for h in have)
    return _equal(have, want)


def _catalog_folder(source: str) -> str:
    if has_scheme(source):
        return posixpath.dirname(source)
    return str(Path(source).resolve().parent)


def _read_raw(source: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    try:
        with fsspec.open(source, "rt", **(storage_options or {})) as stream:
            text = stream.read()
    except FileNotFoundError:
        raise CatalogError(f"{source}: catalog file not found") from None
    except OSError as err:
        raise CatalogError(f"{source}: cannot read catalog ({err})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{source}: not a catalog (not UTF-8 text; expected a YAML file)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CatalogError(f"{source}: not safe plain YAML ({first})") from None


def open_catalog(
    path: str | Path,
    *,
    allow_absolute: bool = False,
    root: str | Path | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> LowdoseCatalog:
    """Read and validate a lowdose catalog.

    Parameters
    ----------
    path
        Catalog YAML file: a local path or an fsspec URL (``s3://bucket/cat.yaml``).
    allow_absolute
        Trust absolute paths and URLs written in the catalog (off by default: a
        catalog from elsewhere could otherwise point at any file on this machine).
    root
        A trusted local folder that encloses the catalog's folder: relative paths
        may then climb (``..``) up to it but not above. Default: the catalog's folder.
    storage_options
        fsspec options for reading the catalog file itself.

    Raises
    ------
    CatalogError
        If the file is missing, not safe YAML, or names anything outside the allowlist.
    """
    source = str(path)
    raw = _read_raw(source, storage_options)
    folder = _catalog_folder(source)
    climb = 0
    trusted = None if has_scheme(source) or allow_absolute else folder
    if root is not None:
        if has_scheme(source):
            raise CatalogError(f"{source}: root= applies to local catalogs only")
        rel = os.path.relpath(folder, Path(root).resolve())
        if rel.startswith(".."):
            raise CatalogError(f"{source}: root {root} does not enclose the catalog's folder")
        climb = 0 if rel == "." else len(Path(rel).parts)
        trusted = None if allow_absolute else str(Path(root).resolve())
    entries = validate_catalog_dict(raw, source, allow_absolute=allow_absolute, climb=climb)
    return LowdoseCatalog(
        source=source,
        base=folder,
        entries=entries,
        metadata=dict(raw.get("metadata") or {}),
        aliases=dict(raw.get("aliases") or {}),
        trusted=trusted,
    )


def _relative_location(
    location: str, folder: Path, name: str, allow_absolute: bool, root: Path | None = None
) -> str:
    if has_scheme(location):
        if not allow_absolute:
            raise CatalogError(
                f"entry {name!r}: {location} is a URL; "
                "pass allow_absolute=True (CLI: --allow-absolute) to record it"
            )
        return location
    product = Path(location).resolve()
    rel = os.path.relpath(product, folder)
    inside_root = root is not None and not os.path.relpath(product, root).startswith("..")
    if rel == "." or (rel.startswith("..") and not inside_root):
        if not allow_absolute:
            raise CatalogError(
                f"entry {name!r}: {product} is outside the catalog folder {folder}; keep products "
                "beside or below the catalog, or pass root= (a trusted enclosing folder) "
                "or allow_absolute=True (CLI: --allow-absolute, which records the absolute path)"
            )
        return str(product)
    return CATALOG_DIR_PREFIX + Path(rel).as_posix()


def _entry_dicts(
    entry: CatalogEntry, folder: Path, allow_absolute: bool, root: Path | None = None
) -> tuple[dict, dict]:
    if not NAME_PATTERN.match(entry.name):
        raise CatalogError(f"entry {entry.name!r}: names may use letters, digits, '_', '.', '-' only")
    kind = ProductKind(entry.kind)
    reader = KIND_READERS[kind][0]
    if kind in (ProductKind.COLUMN_TABLE, ProductKind.FRAME_TABLE) and entry.dataframe == "dask":
        reader = DASK_PARQUET
    rule = ALLOWED_READERS[reader]
    location = _relative_location(entry.location, folder, entry.name, allow_absolute, root)
    if kind == ProductKind.MODEL_ARTEFACT and not location.endswith("model.yaml"):
        location = location.rstrip("/") + "/model.yaml"
    data_kwargs: dict[str, Any] = {"url": location, "storage_options": dict(entry.storage_options) or None}
    reader_kwargs: dict[str, Any] = {"args": [f"{{data({entry.name}.data)}}"]}
    if rule.datatype.endswith(":Zarr"):
        data_kwargs["root"] = ""
        reader_kwargs["chunks"] = {}
    data = {"datatype": rule.datatype, "kwargs": data_kwargs, "metadata": {}, "user_parameters": {}}
    metadata = {"kind": str(kind), **{k: v for k, v in entry.metadata.items() if k != "kind"}}
    record = {
        "reader": reader,
        "kwargs": reader_kwargs,
        "metadata": metadata,
        "output_instance": rule.output_instance,
        "user_parameters": {},
    }
    return record, data


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so concurrent writers do not lose entries."""
    import fcntl

    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, raw: Mapping[str, Any]) -> None:
    text = yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False, allow_unicode=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _empty_catalog(description: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"lowdose_catalog": CATALOG_FORMAT_VERSION, "created": now_utc()}
    if description:
        meta["description"] = description
    return {"version": 2, "metadata": meta, "entries": {}, "data": {}, "aliases": {}, "user_parameters": {}}


def trust_needed(catalog_path: str | Path) -> tuple[Path | None, bool]:
    """What opening a local catalog needs: ``(root, allow_absolute)``.

    ``root`` is the folder its deepest ``..`` location climbs to (None when every
    relative location stays inside the catalog's folder); ``allow_absolute`` is true
    when some location is an absolute path or a URL.
    """
    path = Path(catalog_path)
    entries = validate_catalog_dict(_read_raw(str(path)), str(path), allow_absolute=True, climb=10**6)
    ups, absolute = 0, False
    for entry in entries.values():
        if not entry.location.startswith(CATALOG_DIR_PREFIX):
            absolute = True
            continue
        ups = max(ups, climb_of(entry.location[len(CATALOG_DIR_PREFIX) :]))
    folder = path.resolve().parent
    root = folder.parents[ups - 1] if ups else None
    return root, absolute


def check_catalog_target(catalog_path: str | Path) -> None:
    """Refuse, before any work, a catalog path that :func:`register_products` would refuse later.

    A folder, a file that is not a lowdose catalog, or a URL (lowdose writes local
    catalogs only) is a :class:`CatalogError`; a missing file is fine (it is created).
    """
    if has_scheme(str(catalog_path)):
        raise CatalogError(f"{catalog_path}: lowdose writes local catalogs only")
    path = Path(catalog_path)
    if path.is_dir():
        raise CatalogError(f"{path}: is a folder; the catalog is a YAML file (e.g. {path / 'catalog.yaml'})")
    if path.exists():
        validate_catalog_dict(_read_raw(str(path)), str(path), allow_absolute=True, climb=10**6)
    else:
        from lowdose.store.location import check_creatable

        check_creatable(path, "catalog")


def register_products(
    catalog_path: str | Path,
    entries: Iterable[CatalogEntry],
    *,
    allow_absolute: bool = False,
    replace: bool = True,
    description: str = "",
    root: str | Path | None = None,
) -> list[str]:
    """Add (or update) entries in the local catalog at ``catalog_path``, creating it if needed.

    Locations are stored relative to the catalog's folder. The update is done
    under a lock file and written atomically, so concurrent registrations keep
    each other's entries and a crash never leaves half a catalog.

    Parameters
    ----------
    catalog_path
        The catalog YAML file (created with its folder when missing).
    entries
        What to register (see :func:`product_entry`).
    allow_absolute
        Record products outside the catalog folder by absolute path/URL instead of refusing.
    replace
        Replace entries of the same name; if false, an existing name is an error.
    description
        Catalog description, used when the catalog is created.
    root
        A trusted folder enclosing the catalog: products inside it are recorded
        relative (``..`` allowed); readers must then pass the same ``root``.

    Returns
    -------
    list of str
        The names registered.
    """
    path = Path(catalog_path)
    if has_scheme(str(catalog_path)):
        raise CatalogError(f"{catalog_path}: lowdose writes local catalogs only")
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.resolve().parent
    items = list(entries)
    with _locked(path):
        if path.exists():
            raw = _read_raw(str(path))
            validate_catalog_dict(raw, str(path), allow_absolute=True, climb=10**6)
            raw = dict(raw)
        else:
            raw = _empty_catalog(description)
        for key in ("entries", "data", "aliases", "user_parameters"):
            raw[key] = dict(raw.get(key) or {})
        for entry in items:
            if not replace and entry.name in raw["entries"]:
                raise CatalogError(
                    f"{path}: entry {entry.name!r} exists; choose another name, or replace it "
                    "(replace=True; CLI --replace)"
                )
            trusted = Path(root).resolve() if root is not None else None
            record, data = _entry_dicts(entry, folder, allow_absolute, trusted)
            raw["entries"][entry.name] = record
            raw["data"][f"{entry.name}.data"] = data
        for entry in items:  # a link must name an entry (registered before or in this call)
            linked = entry.metadata.get("series")
            if linked is not None and (linked == entry.name or linked not in raw["entries"]):
                raise CatalogError(
                    f"{path}: entry {entry.name!r} links to series {linked!r}, which is not an entry of "
                    "this catalog; register the FrameSeries first (or in the same call)"
                )
        raw.setdefault("metadata", {})["updated"] = now_utc()
        validate_catalog_dict(raw, str(path), allow_absolute=True, climb=10**6)
        _write_atomic(path, raw)
    return [e.name for e in items]


def register(
    catalog_path: str | Path,
    name: str,
    path: str | Path,
    kind: ProductKind | str | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    series: str | None = None,
    source: str | None = None,
    allow_absolute: bool = False,
) -> CatalogEntry:
    """Register one local product (metadata harvested from it) in a catalog; return the entry."""
    entry = product_entry(name, path, kind, metadata, series=series, source=source)
    register_products(catalog_path, [entry], allow_absolute=allow_absolute)
    return entry


def register_run_outputs(
    catalog_path: str | Path,
    out_dir: str | Path,
    *,
    prefix: str,
    series: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
    allow_absolute: bool = False,
    root: str | Path | None = None,
) -> list[CatalogEntry]:
    """Register what a pipeline run wrote into ``out_dir`` (see :data:`RUN_OUTPUTS`).

    Entries are named ``<prefix>.denoised``, ``<prefix>.columns``, ``<prefix>.frames``, and
    ``<prefix>.columns_avgN``/``<prefix>.frames_avgN`` for a time-averaged analysis (their
    metadata carries ``frames_per_sum: N``); missing outputs are skipped. ``series`` links
    them to their FrameSeries entry. ``allow_absolute`` and ``root`` are as in
    :func:`register_products`.
    """
    out = Path(out_dir)
    entries = []
    for filename, kind in RUN_OUTPUTS.items():
        product = out / filename
        if product.exists():
            name = f"{prefix}.{filename.split('.')[0]}"
            entries.append(product_entry(name, product, kind, metadata, series=series, source=source))
    for table, kind in (("columns", ProductKind.COLUMN_TABLE), ("frames", ProductKind.FRAME_TABLE)):
        for product in sorted(out.glob(f"{table}_avg*.parquet")):
            n = averaged_table_frames(product.name, table)
            if n is not None:
                averaged = {**(metadata or {}), "frames_per_sum": n}
                name = f"{prefix}.{product.stem}"
                entries.append(product_entry(name, product, kind, averaged, series=series, source=source))
    if not entries:
        raise CatalogError(f"{out}: no pipeline outputs found (expected any of {sorted(RUN_OUTPUTS)})")
    register_products(catalog_path, entries, allow_absolute=allow_absolute, root=root)
    return entries


def remove_entries(catalog_path: str | Path, names: Iterable[str]) -> None:
    """Remove entries (and their data descriptions) from a local catalog; unknown names are errors."""
    path = Path(catalog_path)
    with _locked(path):
        raw = dict(_read_raw(str(path)))
        validate_catalog_dict(raw, str(path), allow_absolute=True, climb=10**6)
        entries, data = dict(raw.get("entries") or {}), dict(raw.get("data") or {})
        for name in names:
            if name not in entries:
                raise CatalogError(f"{path}: no entry {name!r}")
            record = entries.pop(name)
            key = str(record["kwargs"]["args"][0])[len("{data(") : -len(")}")]
            data.pop(key, None)
        raw["entries"], raw["data"] = entries, data
        raw["aliases"] = {a: t for a, t in (raw.get("aliases") or {}).items() if t in entries}
        _write_atomic(path, raw)


__all__ = [
    "RUN_OUTPUTS",
    "CatalogEntry",
    "CatalogError",
    "LowdoseCatalog",
    "ProductKind",
    "open_catalog",
    "product_entry",
    "register",
    "register_products",
    "register_run_outputs",
    "remove_entries",
]
