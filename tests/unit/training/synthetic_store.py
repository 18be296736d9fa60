"""A tiny synthetic SimulationSet for training tests: Gaussian columns on a lattice in vacuum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from lowdose.store import schema

OPTICS = {
    "voltage_kV": 300.0,
    "C3_um": -13.0,
    "C5_mm": 5.0,
    "focal_spread_nm": 4.0,
    "convergence_mrad": 0.2,
    "vibration_pm": 50.0,
    "pixel_size_A": 0.061,
    "dose_e_per_px": 0.45,
}


def lattice_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Expected counts at 0.45 e/px: a particle of bright or dark Gaussian columns on vacuum."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    spacing = rng.uniform(18, 32)
    angle = rng.uniform(0, np.pi)
    sigma = rng.uniform(3.5, 6.0)
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / spacing
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / spacing
    du = u - np.round(u)
    dv = v - np.round(v)
    columns = np.exp(-((du**2 + dv**2) * spacing**2) / (2 * sigma**2))
    cy, cx = rng.uniform(0.3, 0.7, size=2) * size
    radius = rng.uniform(0.25, 0.45) * size
    inside = 1.0 / (1.0 + np.exp((np.hypot(yy - cy, xx - cx) - radius) / 3.0))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    image = 0.45 * (1.0 + inside * (0.1 * sign + 0.6 * sign * (columns - 0.3)))
    return np.clip(image, 0.02, None).astype(np.float32)


def write_synthetic_set(
    path: Path, n_structures: int = 6, defoci: int = 2, size: int = 96, seed: int = 0
) -> Path:
    """Write a SimulationSet zarr (one image per chunk) with ``n_structures × defoci`` images."""
    rng = np.random.default_rng(seed)
    images = []
    model_ids = []
    defocus = []
    for structure in range(n_structures):
        for k in range(defoci):
            images.append(lattice_image(rng, size))
            model_ids.append(structure)
            defocus.append(float(4 * k))
    n = len(images)
    ds = xr.Dataset(
        {
            "clean": (("image", "y", "x"), np.stack(images)),
            "done": (("image",), np.ones(n, dtype=np.uint8)),
        },
        coords={
            "image": np.arange(n, dtype=np.int64),
            "defocus_nm": ("image", np.asarray(defocus)),
            "tilt_x_deg": ("image", np.zeros(n)),
            "tilt_y_deg": ("image", np.zeros(n)),
            "support_thickness_nm": ("image", np.full(n, 3.0)),
            "particle": ("image", np.array(["PtNp1"] * n, dtype=object)),
            "defect": ("image", np.array(["D0"] * n, dtype=object)),
            "contrast": ("image", np.array(["white"] * n, dtype=object)),
            "model_id": ("image", np.asarray(model_ids, dtype=np.int64)),
        },
        attrs=dict(OPTICS),
    )
    ds = schema.stamp(ds, schema.Layout.SIMULATION_SET)
    ds.to_zarr(
        path, mode="w", zarr_format=3, consolidated=False, encoding={"clean": {"chunks": (1, size, size)}}
    )
    return path
