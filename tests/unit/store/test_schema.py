import numpy as np
import pytest
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store.schema import Layout, ground_truth_path, stamp, validate


def frame_series(dtype: str = "uint8") -> xr.Dataset:
    counts = np.zeros((3, 4, 5), dtype=dtype)
    ds = xr.Dataset(
        {"counts": (("frame", "y", "x"), counts)},
        coords={"time_s": ("frame", np.arange(3) / 40.0)},
        attrs={"frame_rate_hz": 40.0, "dose_e_per_px": 0.45, "pixel_size_A": 0.061},
    )
    return stamp(ds, Layout.FRAME_SERIES)


def test_valid_frame_series_passes() -> None:
    ds = frame_series()
    assert validate(ds, Layout.FRAME_SERIES) is ds
    assert ds.attrs["lowdose_layout"] == "FrameSeries"


def test_float_counts_refused() -> None:
    ds = frame_series("float32")
    with pytest.raises(StoreError, match="dtype float32"):
        validate(ds, Layout.FRAME_SERIES, "s.zarr")


def test_wrong_layout_and_missing_attr() -> None:
    ds = frame_series()
    with pytest.raises(StoreError, match="expected a lowdose SimulationSet"):
        validate(ds, Layout.SIMULATION_SET)
    del ds.attrs["pixel_size_A"]
    with pytest.raises(StoreError, match="pixel_size_A"):
        validate(ds, Layout.FRAME_SERIES)


def test_ground_truth_path() -> None:
    assert ground_truth_path("/a/b/run.zarr").name == "run.columns.parquet"
