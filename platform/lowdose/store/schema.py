"""The on-disk layouts of lowdose products, validated on open and on write.

Every zarr store lowdose writes carries ``attrs["lowdose_layout"]`` (one of
:class:`Layout`) and ``attrs["lowdose_layout_version"]``; tables travel beside
their store as Parquet. This module is the single source of truth for names:
variable names, dims, required coords/attrs and table columns. It imports only
numpy/xarray (and :mod:`lowdose.store.location`, which is standard library).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store.location import StorePath, is_url

LAYOUT_VERSION = 1


class Layout(StrEnum):
    """Kinds of lowdose product."""

    SIMULATION_SET = "SimulationSet"
    FRAME_SERIES = "FrameSeries"
    DENOISED_SERIES = "DenoisedSeries"


@dataclass(frozen=True)
class ArrayLayout:
    """Required structure of one zarr-backed xarray layout."""

    layout: Layout
    variable: str
    dims: tuple[str, str, str]
    dtypes: tuple[str, ...]
    coords: tuple[str, ...] = ()
    attrs: tuple[str, ...] = ()
    optional_variables: tuple[str, ...] = field(default=())


SIMULATION_SET = ArrayLayout(
    layout=Layout.SIMULATION_SET,
    variable="clean",
    dims=("image", "y", "x"),
    dtypes=("float32",),
    coords=(
        "defocus_nm",
        "tilt_x_deg",
        "tilt_y_deg",
        "support_thickness_nm",
        "particle",
        "defect",
        "contrast",
        "model_id",
    ),
    attrs=(
        "voltage_kV",
        "C3_um",
        "C5_mm",
        "focal_spread_nm",
        "convergence_mrad",
        "vibration_pm",
        "pixel_size_A",
        "dose_e_per_px",
    ),
)

FRAME_SERIES = ArrayLayout(
    layout=Layout.FRAME_SERIES,
    variable="counts",
    dims=("frame", "y", "x"),
    dtypes=("uint8", "uint16", "uint32"),
    coords=("time_s",),
    attrs=("frame_rate_hz", "dose_e_per_px", "pixel_size_A"),
    optional_variables=("clean",),
)

DENOISED_SERIES = ArrayLayout(
    layout=Layout.DENOISED_SERIES,
    variable="denoised",
    dims=("frame", "y", "x"),
    dtypes=("float16", "float32"),
    coords=("time_s",),
    attrs=("model_id", "model_sha256", "pixel_size_A"),
)

LAYOUTS = {spec.layout: spec for spec in (SIMULATION_SET, FRAME_SERIES, DENOISED_SERIES)}

GROUND_TRUTH_COLUMNS = ("image", "x_px", "y_px", "element", "n_atoms", "surface")
"""Columns of a SimulationSet's ground-truth table (``image`` is ``frame`` for series)."""

COLUMN_TABLE_COLUMNS = ("frame", "x_px", "y_px", "sigma_px", "intensity", "llr", "verdict", "surface")
"""Columns of a ColumnTable: one row per detected column per frame."""

FRAME_TABLE_COLUMNS = (
    "frame",
    "time_s",
    "counts",
    "n_columns",
    "n_surface",
    "n_real",
    "n_undecided",
    "n_spurious",
    "mean_llr",
    "particle_area_A2",
)
"""Minimum columns of a FrameTable: one row per frame (the structural time series)."""


def ground_truth_path(store: str | Path) -> Path:
    """Where the ground-truth column table of a local store lives (a Parquet file beside it).

    For stores that may be fsspec URLs use :func:`ground_truth_location`.
    """
    if is_url(store):
        raise StoreError(f"{store}: a URL; use ground_truth_location() for stores that may be remote")
    store = Path(store)
    return store.with_name(store.name.removesuffix(".zarr") + ".columns.parquet")


def ground_truth_location(store: str | Path | StorePath, storage_options: dict | None = None) -> StorePath:
    """Where the ground-truth column table of a local or remote (fsspec URL) store lives."""
    where = StorePath.of(store, storage_options)
    return where.with_name(where.name.removesuffix(".zarr") + ".columns.parquet")


def stamp(ds: xr.Dataset, layout: Layout) -> xr.Dataset:
    """Return ``ds`` with the layout name, layout version and lowdose version in attrs."""
    from lowdose import __version__

    ds = ds.copy()
    ds.attrs.update(
        lowdose_layout=str(layout),
        lowdose_layout_version=LAYOUT_VERSION,
        lowdose_version=__version__,
    )
    return ds


def validate(ds: xr.Dataset, layout: Layout, source: str = "<dataset>") -> xr.Dataset:
    """Check that ``ds`` follows ``layout``; raise :class:`StoreError` naming ``source``.

    Checks the layout stamp, the main variable's dims and dtype, and the
    required coords and attrs. Returns ``ds`` unchanged so it can be chained.
    """
    spec = LAYOUTS[Layout(layout)]
    found = ds.attrs.get("lowdose_layout")
    if found != str(spec.layout):
        raise StoreError(f"{source}: expected a lowdose {spec.layout} store, found layout {found!r}")
    if spec.variable not in ds:
        raise StoreError(f"{source}: missing variable '{spec.variable}'")
    var = ds[spec.variable]
    if tuple(var.dims) != spec.dims:
        raise StoreError(f"{source}: variable '{spec.variable}' has dims {var.dims}, expected {spec.dims}")
    if np.dtype(var.dtype).name not in spec.dtypes:
        raise StoreError(
            f"{source}: variable '{spec.variable}' has dtype {var.dtype}, expected one of {spec.dtypes}"
        )
    missing = [c for c in spec.coords if c not in ds.coords]
    if missing:
        raise StoreError(f"{source}: missing coords {missing}")
    missing = [a for a in spec.attrs if a not in ds.attrs]
    if missing:
        raise StoreError(f"{source}: missing attrs {missing}")
    return ds
