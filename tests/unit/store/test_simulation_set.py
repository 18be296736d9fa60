"""SimulationSet writer/reader on a real zarr store with synthetic images (no physics)."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store import schema
from lowdose.store.simulation_set import (
    create_simulation_set,
    done_images,
    finalize_ground_truth,
    open_simulation_set,
    read_ground_truth,
    select,
    split_by_structure,
    write_images,
)

N_MODELS, N_DEF, SHAPE = 6, 3, (8, 8)


def _coords():
    ids = np.repeat(np.arange(N_MODELS), N_DEF)
    return {
        "defocus_nm": np.tile([2.0, 6.0, 12.0], N_MODELS),
        "tilt_x_deg": np.zeros(len(ids)),
        "tilt_y_deg": np.where(ids % 2 == 0, 0.0, 2.0),
        "support_thickness_nm": np.full(len(ids), 3.0),
        "support_surface": ["faceted"] * len(ids),
        "particle": [f"PtNp{1 + i % 4}" for i in ids],
        "defect": ["D0"] * len(ids),
        "model_id": ids,
        "structure_seed": ids * 7,
    }


ATTRS = {
    "voltage_kV": 300.0,
    "C3_um": -13.0,
    "C5_mm": 5.0,
    "focal_spread_nm": 4.0,
    "convergence_mrad": 0.2,
    "vibration_pm": 50.0,
    "pixel_size_A": 0.061,
    "dose_e_per_px": 0.45,
}


def _create(path, digest="abc"):
    return create_simulation_set(path, image_shape=SHAPE, coords=_coords(), attrs=ATTRS, grid_digest=digest)


def _gt(model_id):
    return pd.DataFrame(
        {
            "x_px": np.array([1.0, 2.0], np.float32) + model_id,
            "y_px": np.array([3.0, 4.0], np.float32),
            "element": ["Pt", "Ce"],
            "n_atoms": np.array([5, 7], np.int32),
            "surface": [True, False],
        }
    )


def _write(path, model_id):
    images = np.full((N_DEF, *SHAPE), float(model_id), np.float32)
    write_images(path, model_id * N_DEF, images, ["white", "mixed", "black"], _gt(model_id), model_id)


def test_create_write_open_roundtrip(tmp_path):
    path = tmp_path / "sims.zarr"
    assert _create(path) is True
    assert _create(path) is False  # same grid: reopened, nothing lost
    for m in (0, 2):
        _write(path, m)
    ds = open_simulation_set(path)
    schema.validate(ds, schema.Layout.SIMULATION_SET)
    assert ds.sizes["image"] == 2 * N_DEF
    assert ds["clean"].chunks[0] == (1,) * (2 * N_DEF)
    assert list(ds["image"].values) == [0, 1, 2, 6, 7, 8]
    assert float(ds["clean"].isel(image=4).mean()) == 2.0
    assert [str(c) for c in ds["contrast"].values] == ["white", "mixed", "black"] * 2
    assert ds.attrs["C3_um"] == -13.0 and "version_abtem" in ds.attrs
    full = open_simulation_set(path, complete_only=False)
    assert full.sizes["image"] == N_MODELS * N_DEF
    gt = read_ground_truth(path)
    assert list(gt.columns[:6]) == list(schema.GROUND_TRUTH_COLUMNS)
    assert sorted(gt["image"].unique()) == [0, 1, 2, 6, 7, 8]


def test_different_grid_is_refused(tmp_path):
    path = tmp_path / "sims.zarr"
    _create(path, digest="one")
    with pytest.raises(StoreError, match="different grid"):
        _create(path, digest="two")


def test_interrupted_write_is_not_marked_done_and_resume_completes(tmp_path):
    path = tmp_path / "sims.zarr"
    _create(path)
    _write(path, 0)
    # Simulate a crash after the image data of model 1 was written but before `done`.
    data = xr.Dataset({"clean": (("image", "y", "x"), np.full((N_DEF, *SHAPE), 9.0, np.float32))})
    data.to_zarr(path, region={"image": slice(N_DEF, 2 * N_DEF)}, consolidated=False)
    done = done_images(path)
    assert done[:N_DEF].all() and not done[N_DEF:].any()
    assert open_simulation_set(path).sizes["image"] == N_DEF
    for m in range(1, N_MODELS):
        _write(path, m)
    assert done_images(path).all()
    assert float(open_simulation_set(path)["clean"].isel(image=N_DEF).mean()) == 1.0
    out = finalize_ground_truth(path)
    assert out == schema.ground_truth_path(path) and out.exists()
    gt = read_ground_truth(path)
    assert len(gt) == 2 * N_MODELS * N_DEF
    assert not list(out.parent.glob("*.tmp"))


def test_select_and_split_by_structure(tmp_path):
    path = tmp_path / "sims.zarr"
    _create(path)
    for m in range(N_MODELS):
        _write(path, m)
    ds = open_simulation_set(path)
    white = select(ds, contrast="white")
    assert white.sizes["image"] == N_MODELS
    sub = select(ds, particle=["PtNp1", "PtNp2"], defocus_nm=slice(4, 12))
    assert set(map(str, sub["particle"].values)) == {"PtNp1", "PtNp2"}
    assert set(sub["defocus_nm"].values) == {6.0, 12.0}
    assert select(ds, tilt_y_deg=2.0, defocus_nm=slice(None, 2)).sizes["image"] == N_MODELS // 2
    assert hasattr(sub["clean"].data, "dask")  # still lazy
    with pytest.raises(StoreError, match="unknown per-image coord"):
        select(ds, colour="white")
    train, val, test = split_by_structure(ds, fractions=(0.5, 0.25, 0.25), seed=0)
    ids = [set(part["model_id"].values.tolist()) for part in (train, val, test)]
    assert sum(len(i) for i in ids) == N_MODELS
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = split_by_structure(ds, fractions=(0.5, 0.25, 0.25), seed=0)
    assert [set(p["model_id"].values.tolist()) for p in again] == ids
    with pytest.raises(StoreError):
        split_by_structure(ds, fractions=(0.5, 0.2))


def test_open_refuses_missing_and_foreign_stores(tmp_path):
    with pytest.raises(StoreError, match="no such"):
        open_simulation_set(tmp_path / "missing.zarr")
    other = tmp_path / "other.zarr"
    xr.Dataset({"a": ("x", np.zeros(3))}).to_zarr(other, consolidated=False)
    with pytest.raises(StoreError, match="SimulationSet"):
        open_simulation_set(other)


def test_new_sets_are_tiled_and_read_one_image_per_dask_chunk(tmp_path):
    import zarr

    from lowdose.store.simulation_set import CLEAN_TILE_PX, clean_chunks

    path = tmp_path / "tiled.zarr"
    shape = (CLEAN_TILE_PX + 11, 20)  # two tiles down, one across
    coords = {k: v[:2] for k, v in _coords().items()}
    create_simulation_set(path, image_shape=shape, coords=coords, attrs=ATTRS, grid_digest="t")
    assert zarr.open_array(str(path), path="clean", mode="r").chunks == (1, CLEAN_TILE_PX, 20)
    assert clean_chunks(shape) == (1, CLEAN_TILE_PX, 20) and clean_chunks((8, 8)) == (1, 8, 8)
    images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    write_images(path, 0, images, ["white", "black"], _gt(0), 0)
    ds = open_simulation_set(path)
    assert ds["clean"].chunks == ((1, 1), (shape[0],), (shape[1],))
    np.testing.assert_array_equal(ds["clean"].values, images)
