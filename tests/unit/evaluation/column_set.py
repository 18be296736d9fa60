"""A tiny SimulationSet with ground truth, written through the real store API (evaluation tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lowdose.store.simulation_set import create_simulation_set, finalize_ground_truth, write_images
from tests.unit.analysis.synthetic import PIXEL_SIZE_A, particle_on_support

ATTRS = {
    "voltage_kV": 300.0,
    "C3_um": -13.0,
    "C5_mm": 5.0,
    "focal_spread_nm": 4.0,
    "convergence_mrad": 0.2,
    "vibration_pm": 50.0,
    "pixel_size_A": PIXEL_SIZE_A,
    "dose_e_per_px": 0.45,
}


def write_column_set(path: Path, n_structures: int = 10, defoci: int = 2, size: int = 192) -> Path:
    """``n_structures × defoci`` images of a 5×4 'Pt' block on 'Ce' support columns, with ground truth.

    Structure ``s`` is the block shifted by ``s`` pixels to the right (so structures differ).
    """
    image, rows = particle_on_support(size)
    truth = pd.DataFrame(rows)
    n = n_structures * defoci
    coords = {
        "defocus_nm": [float(4 * k) for _ in range(n_structures) for k in range(defoci)],
        "tilt_x_deg": [0.0] * n,
        "tilt_y_deg": [0.0] * n,
        "support_thickness_nm": [3.0] * n,
        "support_surface": ["faceted"] * n,
        "particle": ["PtNp1"] * n,
        "defect": ["D0"] * n,
        "model_id": [s for s in range(n_structures) for _ in range(defoci)],
        "structure_seed": [s for s in range(n_structures) for _ in range(defoci)],
    }
    create_simulation_set(path, image_shape=(size, size), coords=coords, attrs=ATTRS, grid_digest="test")
    for s in range(n_structures):
        shifted = np.roll(image, s, axis=1).astype(np.float32)
        columns = truth.assign(x_px=truth["x_px"] + s, n_atoms=np.int32(3))
        columns = columns[["x_px", "y_px", "element", "n_atoms", "surface"]].astype(
            {"x_px": "float32", "y_px": "float32"}
        )
        write_images(path, s * defoci, np.stack([shifted] * defoci), ["white"] * defoci, columns, s)
    finalize_ground_truth(path)
    return path
