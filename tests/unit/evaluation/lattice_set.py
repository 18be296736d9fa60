"""Tiny SimulationSets with ground-truth column tables for the evaluation tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lowdose.store import schema
from tests.unit.training.synthetic_store import OPTICS


def write_set(
    path: Path,
    images: Sequence[np.ndarray],
    coords: dict[str, Sequence[Any]],
    columns: Sequence[Sequence[dict[str, Any]]] | None = None,
) -> Path:
    """Write ``images`` (expected counts at 0.45 e/px) as a SimulationSet, with ground truth.

    ``coords`` needs at least ``model_id``; missing per-image coords get neutral values.
    ``columns[i]`` lists image ``i``'s ground-truth columns (x_px, y_px, element, surface).
    """
    n = len(images)
    size = images[0].shape
    neutral: dict[str, Any] = {
        "defocus_nm": 10.0,
        "tilt_x_deg": 0.0,
        "tilt_y_deg": 0.0,
        "support_thickness_nm": 3.0,
        "particle": "PtNp1",
        "defect": "D0",
        "contrast": "white",
    }
    all_coords: dict[str, Any] = {"image": np.arange(n, dtype=np.int64)}
    for name, value in neutral.items():
        values = coords.get(name, [value] * n)
        all_coords[name] = ("image", np.asarray(values, dtype=object if isinstance(value, str) else None))
    all_coords["model_id"] = ("image", np.asarray(coords["model_id"], dtype=np.int64))
    ds = xr.Dataset(
        {
            "clean": (("image", "y", "x"), np.stack(images).astype(np.float32)),
            "done": (("image",), np.ones(n, dtype=np.uint8)),
        },
        coords=all_coords,
        attrs=dict(OPTICS),
    )
    ds = schema.stamp(ds, schema.Layout.SIMULATION_SET)
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding={"clean": {"chunks": (1, *size)}})
    if columns is not None:
        rows = [
            {"image": i, "n_atoms": 1, "model_id": int(coords["model_id"][i]), **row}
            for i, image_rows in enumerate(columns)
            for row in image_rows
        ]
        table = pd.DataFrame(rows).astype({"x_px": "float32", "y_px": "float32", "surface": bool})
        table.to_parquet(schema.ground_truth_path(path), index=False)
    return path
