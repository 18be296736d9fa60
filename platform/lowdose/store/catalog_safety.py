"""Validate a raw Intake v2 catalog (plain YAML data) before anything is imported or opened.

Intake 2 catalogs name Python classes by import path and support templates that
read environment variables or call functions, so a catalog file from somebody
else could run arbitrary code if it were handed to :func:`intake.from_yaml_file`.
lowdose never does that: catalog files are parsed with ``yaml.safe_load`` and the
resulting plain data is checked here against an allowlist of the datatypes and
readers lowdose writes, and every product location is checked to stay inside the
catalog's folder. Only then are intake objects built, from the allowlisted
classes themselves (never from the strings in the file).

This module must never import intake, xarray, dask or anything that opens data.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lowdose.errors import StoreError

CATALOG_DIR_PREFIX = "{CATALOG_DIR}/"
"""How a relative product location is written in a catalog (Intake's own template)."""

CATALOG_FORMAT_VERSION = 1
"""Version of the lowdose conventions inside the Intake v2 catalog (``metadata.lowdose_catalog``)."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_DATA_REF = re.compile(r"^\{data\(([A-Za-z0-9_.\-]+)\)\}$")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class CatalogError(StoreError):
    """A catalog file that is unsafe, malformed, or names an unknown entry."""


class ProductKind(StrEnum):
    """Kinds of lowdose product a catalog entry can describe."""

    SIMULATION_SET = "SimulationSet"
    FRAME_SERIES = "FrameSeries"
    DENOISED_SERIES = "DenoisedSeries"
    COLUMN_TABLE = "ColumnTable"
    FRAME_TABLE = "FrameTable"
    MODEL_ARTEFACT = "ModelArtefact"


ZARR = "intake.readers.datatypes:Zarr"
PARQUET = "intake.readers.datatypes:Parquet"
YAML_FILE = "intake.readers.datatypes:YAMLFile"

XARRAY_READER = "intake.readers.readers:XArrayDatasetReader"
PANDAS_PARQUET = "intake.readers.readers:PandasParquet"
DASK_PARQUET = "intake.readers.readers:DaskParquet"
MODEL_READER = "lowdose.store.catalog_readers:ModelArtefactReader"

ALLOWED_DATATYPES: dict[str, frozenset[str]] = {
    ZARR: frozenset({"url", "storage_options", "root"}),
    PARQUET: frozenset({"url", "storage_options"}),
    YAML_FILE: frozenset({"url", "storage_options"}),
}
"""Datatype class → the kwargs it may carry."""


@dataclass(frozen=True)
class ReaderRule:
    """What an allowlisted reader may read, produce and be given."""

    datatype: str
    output_instance: str
    kwargs: frozenset[str]


ALLOWED_READERS: dict[str, ReaderRule] = {
    XARRAY_READER: ReaderRule(ZARR, "xarray:Dataset", frozenset({"args", "chunks", "engine"})),
    PANDAS_PARQUET: ReaderRule(PARQUET, "pandas:DataFrame", frozenset({"args", "columns"})),
    DASK_PARQUET: ReaderRule(PARQUET, "dask.dataframe:DataFrame", frozenset({"args", "columns"})),
    MODEL_READER: ReaderRule(YAML_FILE, "lowdose.store.catalog_readers:ModelArtefact", frozenset({"args"})),
}
"""The only reader classes a lowdose catalog may name."""

KIND_READERS: dict[ProductKind, tuple[str, ...]] = {
    ProductKind.SIMULATION_SET: (XARRAY_READER,),
    ProductKind.FRAME_SERIES: (XARRAY_READER,),
    ProductKind.DENOISED_SERIES: (XARRAY_READER,),
    ProductKind.COLUMN_TABLE: (PANDAS_PARQUET, DASK_PARQUET),
    ProductKind.FRAME_TABLE: (PANDAS_PARQUET, DASK_PARQUET),
    ProductKind.MODEL_ARTEFACT: (MODEL_READER,),
}
"""Readers allowed for each kind of product (the first is the one lowdose writes)."""

_TOP_KEYS = frozenset({"version", "entries", "data", "aliases", "metadata", "user_parameters"})
_ENTRY_KEYS = frozenset({"reader", "kwargs", "metadata", "output_instance", "user_parameters"})
_DATA_KEYS = frozenset({"datatype", "kwargs", "metadata", "user_parameters"})
_PLAIN = (str, int, float, bool, type(None), _dt.date, _dt.datetime)


@dataclass(frozen=True)
class ValidEntry:
    """One checked catalog entry: what to read, with which allowlisted classes, and its metadata."""

    name: str
    kind: ProductKind
    reader: str
    datatype: str
    location: str
    """As written in the file: ``{CATALOG_DIR}/relative/path`` or an absolute path/URL."""
    storage_options: dict[str, Any]
    reader_kwargs: dict[str, Any]
    metadata: dict[str, Any]


def _plain(value: Any, where: str, source: str) -> None:
    """Refuse anything but YAML scalars, lists and string-keyed mappings."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CatalogError(f"{source}: {where} has a non-string key {key!r}")
            _plain(item, f"{where}.{key}", source)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]", source)
    elif not isinstance(value, _PLAIN):
        raise CatalogError(f"{source}: {where} holds a {type(value).__name__}, expected plain YAML data")


def _no_templates(value: Any, where: str, source: str) -> None:
    """Refuse Intake template strings (``{env(..)}``, ``{func(..)}``, ...) in reader/data kwargs."""
    if isinstance(value, str) and "{" in value:
        raise CatalogError(f"{source}: {where} contains a template {value!r}; lowdose catalogs allow none")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _no_templates(item, f"{where}.{key}", source)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_templates(item, f"{where}[{i}]", source)


def climb_of(relative: str) -> int:
    """How many folders a relative path climbs (``..``) above where it starts, once normalised."""
    parts = posixpath.normpath(relative).split("/")
    return len(parts) - len(list(itertools.dropwhile(lambda part: part == "..", parts)))


def check_location(location: str, entry: str, source: str, *, allow_absolute: bool, climb: int = 0) -> None:
    """Check that a product location stays inside the catalog folder.

    Relative locations (``{CATALOG_DIR}/...``) may not start at a root nor climb
    (``..``) more than ``climb`` folders above the catalog's folder (0: not at
    all). Absolute paths and URLs with a scheme (``s3://``, ``file://``) are
    refused unless ``allow_absolute`` is true, which trusts any location (so
    relative ones may then climb too).
    """
    if location.startswith(CATALOG_DIR_PREFIX):
        relative = location[len(CATALOG_DIR_PREFIX) :]
        if "{" in relative or "\\" in relative or "\x00" in relative:
            raise CatalogError(
                f"{source}: entry {entry!r} location {location!r} is not a plain relative path"
            )
        if not relative or relative.startswith("/") or _URL_SCHEME.match(relative) or ":" in relative:
            raise CatalogError(f"{source}: entry {entry!r} location {location!r} is not a relative path")
        ups = climb_of(relative)
        if ups > climb and not allow_absolute:
            raise CatalogError(
                f"{source}: entry {entry!r} location {location!r} escapes the catalog folder "
                "(only paths inside it are allowed; a trusted root widens it: root=FOLDER, CLI --root)"
            )
        return
    if "{" in location:
        raise CatalogError(f"{source}: entry {entry!r} location {location!r} uses a template; not allowed")
    if not allow_absolute:
        raise CatalogError(
            f"{source}: entry {entry!r} location {location!r} is absolute or a URL; "
            "pass allow_absolute=True (CLI: --allow-absolute) to trust it"
        )


def validate_catalog_dict(
    raw: Any, source: str, *, allow_absolute: bool = False, climb: int = 0
) -> dict[str, ValidEntry]:
    """Check the plain data of a catalog file against the lowdose allowlist.

    Parameters
    ----------
    raw
        What ``yaml.safe_load`` returned for the file.
    source
        The file name, used in every error message.
    allow_absolute
        Accept absolute paths and URLs as product locations.
    climb
        How many folders above the catalog's folder relative paths may reach (``..``).

    Returns
    -------
    dict
        Entry name → :class:`ValidEntry`, in file order.

    Raises
    ------
    CatalogError
        Naming the file and the entry for anything that is not allowlisted.
    """
    if not isinstance(raw, Mapping):
        raise CatalogError(
            f"{source}: expected an Intake v2 catalog (a YAML mapping), got {type(raw).__name__}"
        )
    _plain(raw, "catalog", source)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise CatalogError(
            f"{source}: unknown top-level keys {sorted(unknown)}; expected {sorted(_TOP_KEYS)}"
        )
    if raw.get("version") != 2:
        raise CatalogError(
            f"{source}: expected an Intake v2 catalog ('version: 2'), got {raw.get('version')!r}"
        )
    if raw.get("user_parameters"):
        raise CatalogError(f"{source}: catalog-level user_parameters are not allowed in lowdose catalogs")
    data = raw.get("data") or {}
    entries = raw.get("entries") or {}
    aliases = raw.get("aliases") or {}
    for label, section in (("data", data), ("entries", entries), ("aliases", aliases)):
        if not isinstance(section, Mapping):
            raise CatalogError(f"{source}: '{label}' must be a mapping")
    for alias, target in aliases.items():
        if not isinstance(target, str) or target not in entries:
            raise CatalogError(f"{source}: alias {alias!r} points to unknown entry {target!r}")

    checked: dict[str, ValidEntry] = {}
    for name, entry in entries.items():
        checked[name] = _validate_entry(name, entry, data, source, allow_absolute=allow_absolute, climb=climb)
    return checked


def _validate_entry(
    name: str, entry: Any, data: Mapping[str, Any], source: str, *, allow_absolute: bool, climb: int
) -> ValidEntry:
    where = f"entry {name!r}"
    if not NAME_PATTERN.match(name):
        raise CatalogError(f"{source}: {where}: names may use letters, digits, '_', '.', '-' only")
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{source}: {where} must be a mapping")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise CatalogError(f"{source}: {where} has unknown keys {sorted(unknown)}")
    reader = entry.get("reader")
    rule = ALLOWED_READERS.get(reader) if isinstance(reader, str) else None
    if rule is None:
        raise CatalogError(
            f"{source}: {where} names reader {reader!r}, which is not allowed; "
            f"lowdose catalogs accept only {sorted(ALLOWED_READERS)}"
        )
    if entry.get("user_parameters"):
        raise CatalogError(f"{source}: {where} has user_parameters; not allowed in lowdose catalogs")
    out = entry.get("output_instance")
    if out is not None and out != rule.output_instance:
        raise CatalogError(f"{source}: {where} output_instance {out!r}; expected {rule.output_instance!r}")
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise CatalogError(f"{source}: {where} kwargs must be a mapping")
    bad = set(kwargs) - rule.kwargs
    if bad:
        raise CatalogError(
            f"{source}: {where} passes reader kwargs {sorted(bad)}; allowed {sorted(rule.kwargs)}"
        )
    args = kwargs.get("args")
    match = (
        _DATA_REF.match(args[0])
        if isinstance(args, list) and len(args) == 1 and isinstance(args[0], str)
        else None
    )
    if match is None:
        raise CatalogError(f"{source}: {where} kwargs.args must be ['{{data(<key>)}}'], got {args!r}")
    other = {k: v for k, v in kwargs.items() if k != "args"}
    _no_templates(other, f"{where}.kwargs", source)
    if "engine" in other and other["engine"] != "zarr":
        raise CatalogError(f"{source}: {where} engine {other['engine']!r}; only 'zarr' is allowed")

    key = match.group(1)
    desc = data.get(key)
    if not isinstance(desc, Mapping):
        raise CatalogError(f"{source}: {where} refers to data {key!r}, which is not in the catalog")
    unknown = set(desc) - _DATA_KEYS
    if unknown:
        raise CatalogError(f"{source}: data {key!r} of {where} has unknown keys {sorted(unknown)}")
    datatype = desc.get("datatype")
    if datatype not in ALLOWED_DATATYPES:
        raise CatalogError(
            f"{source}: data {key!r} of {where} has datatype {datatype!r}, which is not allowed; "
            f"expected one of {sorted(ALLOWED_DATATYPES)}"
        )
    if datatype != rule.datatype:
        raise CatalogError(f"{source}: {where}: reader {reader} cannot read datatype {datatype}")
    if desc.get("user_parameters"):
        raise CatalogError(f"{source}: data {key!r} of {where} has user_parameters; not allowed")
    dkw = desc.get("kwargs") or {}
    if not isinstance(dkw, Mapping) or set(dkw) - ALLOWED_DATATYPES[datatype]:
        raise CatalogError(
            f"{source}: data {key!r} of {where} kwargs must be a mapping with keys in "
            f"{sorted(ALLOWED_DATATYPES[datatype])}"
        )
    location = dkw.get("url")
    if not isinstance(location, str) or not location:
        raise CatalogError(f"{source}: data {key!r} of {where} has no 'url' string")
    check_location(location, name, source, allow_absolute=allow_absolute, climb=climb)
    storage_options = dkw.get("storage_options") or {}
    if not isinstance(storage_options, Mapping):
        raise CatalogError(f"{source}: data {key!r} of {where} storage_options must be a mapping")
    _no_templates(storage_options, f"data {key!r}.storage_options", source)
    if dkw.get("root"):
        raise CatalogError(f"{source}: data {key!r} of {where}: zarr 'root' groups are not supported")

    metadata = entry.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise CatalogError(f"{source}: {where} metadata must be a mapping")
    kind_name = metadata.get("kind")
    try:
        kind = ProductKind(str(kind_name))
    except ValueError:
        raise CatalogError(
            f"{source}: {where} metadata.kind is {kind_name!r}; "
            f"expected one of {[k.value for k in ProductKind]}"
        ) from None
    if reader not in KIND_READERS[kind]:
        raise CatalogError(f"{source}: {where}: reader {reader} does not read a {kind}")
    return ValidEntry(
        name=name,
        kind=kind,
        reader=reader,
        datatype=datatype,
        location=location,
        storage_options=dict(storage_options),
        reader_kwargs=other,
        metadata=dict(metadata),
    )


def join_location(base: str, relative: str) -> str:
    """Join a relative product path onto a catalog folder (a local path or a URL)."""
    if _URL_SCHEME.match(base):
        return posixpath.join(base.rstrip("/"), relative)
    return posixpath.normpath(posixpath.join(base.replace("\\", "/"), relative)) if base else relative


def has_scheme(location: str) -> bool:
    """Whether ``location`` is a URL with a scheme such as ``s3://``."""
    return _URL_SCHEME.match(location) is not None
