"""Harvest searchable catalog metadata from a lowdose product on disk.

Reads only attrs, coords and Parquet footers (never pixel data), so registering a
multi-hour series is instant. Used by :mod:`lowdose.store.catalog`; it must never
import torch or dask.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path
from typing import Any

from lowdose.store.catalog_safety import CatalogError, ProductKind
from lowdose.store.schema import COLUMN_TABLE_COLUMNS, FRAME_TABLE_COLUMNS

SEARCHABLE_ATTRS = (
    "material",
    "dose_e_per_px",
    "dose_rate_e_per_A2_s",
    "frame_rate_hz",
    "pixel_size_A",
    "model_id",
    "model_sha256",
    "tta",
    "detector",
    "source",
    "created",
)
"""Store attrs copied into an entry's metadata when present."""


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars and the like into plain YAML-safe values."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def now_utc() -> str:
    """The current UTC time as an ISO-8601 string (seconds precision)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _zarr_metadata(path: Path) -> dict[str, Any]:
    import xarray as xr

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*consolidated metadata", category=RuntimeWarning)
            ds = xr.open_zarr(path, chunks=None, decode_times=False)
    except Exception as err:  # zarr raises many types for a non-store
        raise CatalogError(f"{path}: cannot open as a zarr store ({type(err).__name__}: {err})") from None
    meta: dict[str, Any] = {}
    layout = ds.attrs.get("lowdose_layout")
    if layout is not None:
        meta["kind"] = str(layout)
    for key in SEARCHABLE_ATTRS:
        if key in ds.attrs:
            meta[key] = _jsonable(ds.attrs[key])
    if "source_files" in ds.attrs and "source" not in meta:
        files = ds.attrs["source_files"]
        meta["source"] = _jsonable(files if isinstance(files, str) else list(files)[:5])
    for dim in ("frame", "image"):
        if dim in ds.sizes:
            meta[f"n_{dim}s"] = int(ds.sizes[dim])
    if "y" in ds.sizes and "x" in ds.sizes:
        meta["shape_yx"] = [int(ds.sizes["y"]), int(ds.sizes["x"])]
    if "defocus_nm" in ds.coords and ds["defocus_nm"].size:
        values = ds["defocus_nm"].values
        meta["defocus_range_nm"] = [float(values.min()), float(values.max())]
    meta["variables"] = sorted(str(v) for v in ds.data_vars)
    return meta


def _parquet_metadata(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    try:
        info = pq.ParquetFile(path)
    except Exception as err:
        raise CatalogError(f"{path}: cannot open as a Parquet table ({type(err).__name__}: {err})") from None
    columns = list(info.schema_arrow.names)
    meta: dict[str, Any] = {"n_rows": int(info.metadata.num_rows), "columns": columns}
    if set(COLUMN_TABLE_COLUMNS) <= set(columns):
        meta["kind"] = str(ProductKind.COLUMN_TABLE)
    elif {"frame", "n_surface"} <= set(columns) or set(FRAME_TABLE_COLUMNS) <= set(columns):
        meta["kind"] = str(ProductKind.FRAME_TABLE)
    return meta


def _model_metadata(path: Path) -> dict[str, Any]:
    import yaml

    yaml_path = path / "model.yaml" if path.is_dir() else path
    try:
        config = yaml.safe_load(yaml_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CatalogError(f"{yaml_path}: cannot read model.yaml ({err})") from None
    meta: dict[str, Any] = {"kind": str(ProductKind.MODEL_ARTEFACT)}
    if isinstance(config, dict):
        for key in ("model_id", "architecture", "created", "data_sha256", "pixel_size_A", "dose_e_per_px"):
            value = config.get(key)
            if isinstance(value, dict):
                value = value.get("name", value.get("kind"))
            if value is not None:
                meta[key] = _jsonable(value)
        weights_card = config.get("weights")
        if isinstance(weights_card, dict) and weights_card.get("sha256"):
            meta["model_sha256"] = str(weights_card["sha256"])
    weights = sorted(p.name for p in yaml_path.parent.glob("*.safetensors"))
    meta["weights"] = weights
    return meta


def product_metadata(path: str | Path) -> dict[str, Any]:
    """Searchable metadata of the product at ``path`` (a local zarr store, Parquet file or model folder).

    The ``kind`` key is filled when the product says what it is (the zarr
    ``lowdose_layout`` attr, the Parquet columns, a folder with ``model.yaml``).

    Raises
    ------
    CatalogError
        If the path does not exist or cannot be read as any lowdose product.
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: no such product (file or folder)")
    if (path.is_dir() and (path / "model.yaml").exists()) or path.name == "model.yaml":
        return _model_metadata(path)
    if path.is_dir():
        return _zarr_metadata(path)
    if path.suffix in (".parquet", ".parq", ".pq"):
        return _parquet_metadata(path)
    raise CatalogError(
        f"{path}: not a lowdose product (expected a .zarr store, a .parquet table or a model folder)"
    )
