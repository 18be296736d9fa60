"""Resolve a training config's data: selection, structure splits, dose scale, dataset hash.

The SimulationSet is opened lazily through :mod:`lowdose.store.simulation_set`
only to read its per-image coords; pixel data is read later, patch by patch,
by :mod:`lowdose.training.sampler`. Never imports dask directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lowdose.errors import ConfigError


@dataclass(frozen=True)
class DataSplits:
    """Global image indices of the three structure-disjoint splits, plus provenance."""

    store: Path
    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    store_dose_e_per_px: float
    pixel_size_A: float
    dataset_sha256: str
    image_shape: tuple[int, int] = (0, 0)
    """(height, width) of the store's images, px."""


def _criteria(selection: dict[str, Any]) -> dict[str, Any]:
    criteria: dict[str, Any] = {}
    for name, value in selection.items():
        if isinstance(value, dict):
            unknown = set(value) - {"min", "max"}
            if unknown:
                raise ConfigError(f"selection.{name}: range keys must be 'min'/'max', got {sorted(unknown)}")
            criteria[name] = slice(value.get("min"), value.get("max"))
        else:
            criteria[name] = value
    return criteria


def _held(ds: Any, criteria: dict[str, Any]) -> str:
    """What ``ds`` holds of each selected coord: a range for numbers, the values otherwise."""
    parts = []
    for name in criteria:
        values = np.unique(np.asarray(ds.coords[name].values))
        if values.dtype.kind in "iuf" and values.size > 6:
            parts.append(f"{name} {values.min():g}..{values.max():g}")
        else:
            shown = ", ".join(f"{v:g}" if isinstance(v, float | np.floating) else str(v) for v in values[:12])
            parts.append(f"{name} {{{shown}{', ...' if values.size > 12 else ''}}}")
    return "; ".join(parts)


def resolve_splits(
    store: str | Path,
    selection: dict[str, Any] | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> DataSplits:
    """Select images of a SimulationSet and split them by structure (``model_id``).

    The dataset hash covers the store's attrs (optics, grid digest, versions),
    the selection and the image indices and coords of each split — what the
    model saw — without reading pixel data.
    """
    from lowdose.store.simulation_set import open_simulation_set, select, split_by_structure

    store = Path(store)
    ds = open_simulation_set(store)
    criteria = _criteria(selection or {})
    if criteria:
        everything = ds
        ds = select(ds, **criteria)
        if ds.sizes["image"] == 0:
            raise ConfigError(
                f"selection {selection} matches none of the {everything.sizes['image']} images of "
                f"{store}; it holds {_held(everything, criteria)}"
            )
    parts = split_by_structure(ds, fractions, seed)
    indices = [np.asarray(part["image"].values, dtype=np.int64) for part in parts]
    digest = hashlib.sha256()
    attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float | bool)}
    digest.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    digest.update(json.dumps(selection or {}, sort_keys=True, default=str).encode())
    for part in parts:
        digest.update(np.asarray(part["image"].values, dtype=np.int64).tobytes())
        digest.update(np.asarray(part["model_id"].values, dtype=np.int64).tobytes())
        digest.update(np.asarray(part["defocus_nm"].values, dtype=np.float64).tobytes())
    return DataSplits(
        store=store,
        train=indices[0],
        validation=indices[1],
        test=indices[2],
        store_dose_e_per_px=float(ds.attrs["dose_e_per_px"]),
        pixel_size_A=float(ds.attrs["pixel_size_A"]),
        dataset_sha256=digest.hexdigest(),
        image_shape=(int(ds.sizes["y"]), int(ds.sizes["x"])),
    )
