"""Contact sheet of a SimulationSet: one clean and one Poisson-noised image per class.

Used by ``lowdose simulate --preview`` to eyeball a run: columns must look like
atoms and the particle must sit on the support. matplotlib/numpy only; never
imports dask or torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from lowdose.physics.noise import poisson_noise


def _strings(values: object) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


def _pick(ds: xr.Dataset, name: str, value: str) -> int | None:
    values = _strings(ds[name].values)
    contrast = _strings(ds["contrast"].values)
    for wanted in ("white", "mixed", "black"):
        hits = np.flatnonzero((values == value) & (contrast == wanted))
        if len(hits):
            return int(hits[len(hits) // 2])
    return None


def write_contact_sheet(ds: xr.Dataset, path: str | Path, seed: int = 0) -> Path:
    """Write a PNG with one clean + one noisy image per particle class and per defect class.

    For each class the image shown prefers white, then mixed, then black
    contrast. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows: list[tuple[str, int]] = []
    for coord in ("particle", "defect"):
        for value in sorted(set(_strings(ds[coord].values).tolist())):
            index = _pick(ds, coord, value)
            if index is not None:
                rows.append((value, index))
    fig, axes = plt.subplots(2, max(1, len(rows)), figsize=(2.4 * max(1, len(rows)), 5.2), squeeze=False)
    rng = np.random.default_rng(seed)
    for col, (label, index) in enumerate(rows):
        clean = np.asarray(ds["clean"].isel(image=index).values, dtype=np.float64)
        noisy = poisson_noise(clean, rng)
        img = ds.isel(image=index)
        title = (
            f"{label}: {img['particle'].item()} {img['defect'].item()}\n"
            f"C1={float(img['defocus_nm']):g} nm {img['contrast'].item()}"
        )
        axes[0, col].imshow(clean, cmap="gray")
        axes[0, col].set_title(title, fontsize=7)
        axes[1, col].imshow(noisy, cmap="gray", vmin=0, vmax=3)
        axes[1, col].set_title("Poisson noisy", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
