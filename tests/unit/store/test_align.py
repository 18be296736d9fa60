from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from lowdose.errors import LowdoseInputError
from lowdose.store.align import (
    align_series,
    aligned,
    common_area,
    crop_shifted,
    estimate_drift,
    phase_correlation_shift,
    time_average,
)
from lowdose.store.series import append_frames, create_frame_series, open_series
from tests.unit.store._synthetic import blob_image, drifting_frames


def random_walk_blocks(n_blocks: int, seed: int) -> np.ndarray:
    steps = np.random.default_rng(seed).integers(-3, 4, (n_blocks, 2))
    steps[0] = 0
    return np.cumsum(steps, axis=0)


@pytest.mark.parametrize(("block_frames", "reference"), [(20, "first"), (40, "first"), (20, "previous")])
def test_block_drift_recovered_exactly(tmp_path: Path, block_frames: int, reference: str) -> None:
    """Known integer drift on 0.45 e/px frames, constant within each block, comes back exactly."""
    blocks = random_walk_blocks(6, seed=block_frames)
    truth = np.repeat(blocks, block_frames, axis=0)
    frames = drifting_frames(truth, (80, 72), 0.45, seed=5)
    path = tmp_path / "s.zarr"
    create_frame_series(path, (80, 72), chunk_frames=32)
    append_frames(path, frames)
    record = align_series(path, block_frames=block_frames, reference=reference)  # type: ignore[arg-type]
    ds = open_series(path)
    np.testing.assert_array_equal(ds["shift_y_px"].values, truth[:, 0])
    np.testing.assert_array_equal(ds["shift_x_px"].values, truth[:, 1])
    assert record["n_blocks"] == 6
    np.testing.assert_array_equal(ds["counts"].values, frames)  # raw counts untouched


def test_smooth_drift_interpolated_within_one_pixel() -> None:
    n = 200
    truth = np.stack([np.rint(np.arange(n) * 0.06), np.rint(-np.arange(n) * 0.04)], axis=1).astype(int)
    frames = drifting_frames(truth, (80, 80), 0.45, seed=9)
    shift_y, shift_x, _ = estimate_drift(frames, block_frames=40, per_frame="interpolate")
    # Shifts are relative to the (blurred) first block, so they equal the truth up to one constant;
    # integer block estimates plus per-frame rounding leave at most ±1 px around that constant.
    for estimate, true in ((shift_y, truth[:, 0]), (shift_x, truth[:, 1])):
        error = estimate - true
        offset = np.median(error)
        assert np.abs(error - offset).max() <= 1
        assert np.mean(error != offset) < 0.35


def test_single_frames_are_refused() -> None:
    with pytest.raises(LowdoseInputError, match="≥ 20"):
        estimate_drift(np.zeros((40, 8, 8), "uint8"), block_frames=1)


def test_phase_correlation_sign_convention() -> None:
    image = blob_image((64, 64), 30, 2.0, np.random.default_rng(0))
    moved = np.roll(image, (3, -5), axis=(0, 1))
    assert phase_correlation_shift(image, moved) == (3, -5)


def test_aligned_view_is_lazy_cropped_and_matches_eager(tmp_path: Path) -> None:
    truth = np.repeat(np.array([[0, 0], [2, -1], [-1, 3]]), 20, axis=0)
    frames = drifting_frames(truth, (48, 40), 0.45, seed=2)
    path = tmp_path / "s.zarr"
    create_frame_series(path, (48, 40), chunk_frames=16)
    append_frames(path, frames)
    align_series(path, block_frames=20)
    ds = open_series(path)
    view = aligned(ds)
    assert isinstance(view.data, da.Array)
    y0, x0, h, w = common_area((48, 40), truth[:, 0], truth[:, 1])
    assert (y0, x0, h, w) == (1, 1, 45, 36)
    expected = crop_shifted(frames, truth[:, 0], truth[:, 1], (y0, x0), (h, w))
    np.testing.assert_array_equal(view.values, expected)
    assert view.attrs["aligned_origin_px"] == [1, 1]
    # Aligned block sums correlate better than raw ones (same crop) do.
    sums = time_average(view, 20).values.astype(float)
    raw = time_average(ds, 20).values[:, y0 : y0 + h, x0 : x0 + w].astype(float)
    aligned_corr = np.corrcoef(sums[0].ravel(), sums[2].ravel())[0, 1]
    raw_corr = np.corrcoef(raw[0].ravel(), raw[2].ravel())[0, 1]
    assert aligned_corr > raw_corr + 0.2
    with pytest.raises(LowdoseInputError, match="align"):
        append_frames(path, frames[:1])
        aligned(open_series(path))  # appending drops stale shifts


def test_time_average_sums_lazily() -> None:
    frames = np.random.default_rng(4).poisson(0.45, (95, 6, 5)).astype("uint8")
    lazy = xr.DataArray(da.from_array(frames, chunks=(32, 6, 5)), dims=("frame", "y", "x"))
    lazy = lazy.assign_coords(time_s=("frame", np.arange(95) / 40.0))
    summed = time_average(lazy, 40)
    assert isinstance(summed.data, da.Array) and summed.dtype == "uint32"
    expected = frames[:80].reshape(2, 40, 6, 5).sum(axis=1)
    np.testing.assert_array_equal(summed.values, expected)
    np.testing.assert_allclose(summed["time_s"].values, [0.0, 1.0])
    np.testing.assert_array_equal(time_average(frames, 40).values, expected)
