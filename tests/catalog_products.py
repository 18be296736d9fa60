"""Small synthetic lowdose products (series, denoised, tables, model, simulation) for catalog tests.

Written with the real libraries (xarray/zarr, pyarrow, safetensors) in the documented
layouts of :mod:`lowdose.store.schema`, so catalogs and the dashboard read real files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from lowdose.store.schema import Layout, stamp

FRAME_RATE_HZ = 40.0


def _lattice(size: int, spacing: int = 10) -> np.ndarray:
    coords = np.arange(spacing // 2 + 4, size - 4, spacing, dtype=float)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _render(positions: np.ndarray, size: int, sigma_px: float = 1.6) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.full((size, size), 0.3, np.float32)
    for px, py in positions:
        image += 1.2 * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma_px**2))
    return image


def write_series_products(
    folder: Path, n_frames: int = 24, size: int = 48, seed: int = 0, prefix: str = ""
) -> dict[str, Path]:
    """Write ``series.zarr``, ``denoised.zarr``, ``columns.parquet``, ``frames.parquet`` into ``folder``.

    The particle drifts by one pixel every 4 frames, so consecutive frames differ.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = _lattice(size)
    clean = np.empty((n_frames, size, size), np.float32)
    rows = []
    for frame in range(n_frames):
        shift = frame // 4
        positions = base + np.array([shift % 5, 0])
        clean[frame] = _render(positions, size)
        llr = rng.normal(6.0, 6.0, len(positions))
        verdict = np.where(llr > 6.0, "real", np.where(llr < 0.0, "spurious", "undecided"))
        centre = size / 2
        surface = np.hypot(positions[:, 0] - centre, positions[:, 1] - centre) > size * 0.3
        for (px, py), value, v, s in zip(positions, llr, verdict, surface, strict=True):
            rows.append((frame, px, py, 1.6, 1.2, value, v, bool(s)))
    counts = rng.poisson(clean).astype(np.uint8)
    time_s = np.arange(n_frames) / FRAME_RATE_HZ
    series = xr.Dataset(
        {"counts": (("frame", "y", "x"), counts), "clean": (("frame", "y", "x"), clean)},
        coords={"time_s": ("frame", time_s)},
        attrs={
            "frame_rate_hz": FRAME_RATE_HZ,
            "dose_e_per_px": 0.45,
            "pixel_size_A": 0.5,
            "material": "Pt/CeO2",
            "detector": "synthetic",
        },
    )
    stamp(series, Layout.FRAME_SERIES).chunk({"frame": 8}).to_zarr(
        folder / f"{prefix}series.zarr", mode="w", consolidated=False
    )
    denoised = xr.Dataset(
        {"denoised": (("frame", "y", "x"), clean + rng.normal(0, 0.05, clean.shape).astype(np.float32))},
        coords={"time_s": ("frame", time_s)},
        attrs={"model_id": "unet-test", "model_sha256": "0" * 64, "pixel_size_A": 0.5},
    )
    stamp(denoised, Layout.DENOISED_SERIES).chunk({"frame": 8}).to_zarr(
        folder / f"{prefix}denoised.zarr", mode="w", consolidated=False
    )
    columns = pd.DataFrame(
        rows, columns=["frame", "x_px", "y_px", "sigma_px", "intensity", "llr", "verdict", "surface"]
    )
    columns.to_parquet(folder / f"{prefix}columns.parquet", index=False)
    grouped = columns.groupby("frame")
    frames = pd.DataFrame(
        {
            "frame": np.arange(n_frames),
            "time_s": time_s,
            "counts": counts.reshape(n_frames, -1).sum(axis=1),
            "n_columns": grouped.size().to_numpy(),
            "n_surface": grouped["surface"].sum().to_numpy(),
            "n_real": grouped["verdict"].apply(lambda v: (v == "real").sum()).to_numpy(),
            "n_undecided": grouped["verdict"].apply(lambda v: (v == "undecided").sum()).to_numpy(),
            "n_spurious": grouped["verdict"].apply(lambda v: (v == "spurious").sum()).to_numpy(),
            "mean_llr": grouped["llr"].mean().to_numpy(),
            "particle_area_A2": 100.0 + 5.0 * np.sin(np.arange(n_frames) / 3.0),
        }
    )
    frames.to_parquet(folder / f"{prefix}frames.parquet", index=False)
    return {
        "series": folder / f"{prefix}series.zarr",
        "denoised": folder / f"{prefix}denoised.zarr",
        "columns": folder / f"{prefix}columns.parquet",
        "frames": folder / f"{prefix}frames.parquet",
    }


def write_model(folder: Path) -> Path:
    """Write a tiny model artefact (``weights.safetensors`` + ``model.yaml``)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"conv.weight": np.zeros((2, 1, 3, 3), np.float32)}, str(folder / "weights.safetensors"))
    config = {"model_id": "unet-test", "architecture": {"name": "unet", "depth": 2}, "created": "2026-01-01"}
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return folder


def write_simulation(folder: Path, n_images: int = 3, size: int = 16) -> Path:
    """Write a tiny SimulationSet store."""
    folder.mkdir(parents=True, exist_ok=True)
    clean = np.ones((n_images, size, size), np.float32)
    defocus = np.linspace(-10.0, 10.0, n_images)
    coords = {
        "defocus_nm": ("image", defocus),
        "tilt_x_deg": ("image", np.zeros(n_images)),
        "tilt_y_deg": ("image", np.zeros(n_images)),
        "support_thickness_nm": ("image", np.full(n_images, 5.0)),
        "particle": ("image", ["Pt-wulff"] * n_images),
        "defect": ("image", ["none"] * n_images),
        "contrast": ("image", ["dark"] * n_images),
        "model_id": ("image", ["p0"] * n_images),
    }
    attrs = {
        "voltage_kV": 300.0,
        "C3_um": -15.0,
        "C5_mm": 5.0,
        "focal_spread_nm": 3.0,
        "convergence_mrad": 0.1,
        "vibration_pm": 10.0,
        "pixel_size_A": 0.5,
        "dose_e_per_px": 0.45,
        "material": "Pt/CeO2",
    }
    ds = xr.Dataset({"clean": (("image", "y", "x"), clean)}, coords=coords, attrs=attrs)
    path = folder / "simulation.zarr"
    stamp(ds, Layout.SIMULATION_SET).to_zarr(path, mode="w", consolidated=False)
    return path


def write_long_series(
    folder: Path,
    n_frames: int = 100_000,
    size: int = 64,
    chunk_frames: int = 64,
    written: tuple[int, ...] = (),
) -> dict[str, Path]:
    """A cheap ``n_frames`` series: metadata for all frames, pixel data only in the chunks of ``written``.

    Unwritten chunks read as the fill value (0), so the store costs a few MB. Also
    writes a full-length FrameTable and a ColumnTable with four columns per frame.
    """
    import dask.array as da

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    time_s = np.arange(n_frames) / FRAME_RATE_HZ
    lazy = da.zeros((n_frames, size, size), dtype=np.uint8, chunks=(chunk_frames, size, size))
    series = xr.Dataset(
        {"counts": (("frame", "y", "x"), lazy)},
        coords={"time_s": ("frame", time_s)},
        attrs={
            "frame_rate_hz": FRAME_RATE_HZ,
            "dose_e_per_px": 0.45,
            "pixel_size_A": 0.5,
            "material": "Pt/CeO2",
        },
    )
    path = folder / "long.zarr"
    stamp(series, Layout.FRAME_SERIES).to_zarr(path, mode="w", compute=False, consolidated=False)
    positions = _lattice(size, spacing=24)
    for frame in written:
        lo = (frame // chunk_frames) * chunk_frames
        hi = min(lo + chunk_frames, n_frames)
        block = np.stack([_render(positions + np.array([(i // 8) % 6, 0]), size) * 3 for i in range(lo, hi)])
        counts = rng.poisson(block).astype(np.uint8)
        part = xr.Dataset({"counts": (("frame", "y", "x"), counts)})
        part.to_zarr(path, region={"frame": slice(lo, hi)}, consolidated=False)
    frames = pd.DataFrame(
        {
            "frame": np.arange(n_frames),
            "time_s": time_s,
            "n_surface": 8 + (np.arange(n_frames) // 5000) % 4,
            "n_spurious": rng.poisson(1.0, n_frames),
            "n_undecided": rng.poisson(2.0, n_frames),
            "mean_llr": rng.normal(0.01, 0.002, n_frames),
        }
    )
    frames.to_parquet(folder / "long_frames.parquet", index=False)
    k = len(positions)
    columns = pd.DataFrame(
        {
            "frame": np.repeat(np.arange(n_frames), k),
            "x_px": np.tile(positions[:, 0], n_frames),
            "y_px": np.tile(positions[:, 1], n_frames),
            "sigma_px": 1.6,
            "intensity": 1.0,
            "llr": rng.normal(0.01, 0.01, n_frames * k),
            "verdict": np.tile(np.array(["real", "undecided", "spurious", "real"] * k)[:k], n_frames),
            "surface": np.tile(np.arange(k) % 2 == 0, n_frames),
        }
    )
    columns.to_parquet(folder / "long_columns.parquet", index=False)
    return {
        "series": path,
        "frames": folder / "long_frames.parquet",
        "columns": folder / "long_columns.parquet",
    }
