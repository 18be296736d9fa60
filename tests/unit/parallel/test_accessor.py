import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import torch
from dask.array.utils import assert_eq

import lowdose.parallel.accessor  # noqa: F401  (registers .lowdose)
from lowdose.parallel.analyze import analyze_block
from lowdose.parallel.denoise import denoise_frames
from lowdose.store.series import open_series
from tests.unit.parallel.tiny import TinyConv, tiny_handle, toy_analyze_frame, write_series

torch.set_num_threads(1)


def _no_compute(*args, **kwargs):
    raise AssertionError("building the graph must not compute anything")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    path = tmp_path_factory.mktemp("acc") / "s.zarr"
    return open_series(write_series(path, n_frames=9, shape=(40, 36), chunk_frames=4, with_truth=True))


@pytest.fixture(scope="module")
def handle():
    return tiny_handle(TinyConv(n_layers=2, width=3, seed=4))


def test_denoise_is_lazy_and_equals_eager(series, handle):
    with dask.config.set(scheduler=_no_compute):
        den = series.lowdose.denoise(handle, device="cpu")
    assert den["denoised"].data.numblocks == (3, 1, 1)
    eager = denoise_frames(series["counts"].values, handle, device="cpu")
    assert_eq(den["denoised"].data, eager, check_graph=False)


@pytest.mark.parametrize("chunked", [True, False])
def test_columns_and_frames_lazy_equal_eager(series, handle, chunked, tmp_path):
    ds = series if chunked else series.compute()
    truth = pd.DataFrame({"frame": [0, 0, 5], "x_px": [1.0, 2.0, 3.0], "y_px": [1.0, 2.0, 3.0]})
    with dask.config.set(scheduler=_no_compute):
        columns, frames = ds.lowdose.analyze(model=handle, kernel=toy_analyze_frame, ground_truth=truth)
    assert isinstance(columns, dd.DataFrame) and isinstance(frames, dd.DataFrame)
    assert columns.npartitions == (3 if chunked else 1)
    counts = series["counts"].values
    eager_columns, eager_frames = analyze_block(
        counts,
        denoise_frames(counts, handle, device="cpu"),
        frame_offset=0,
        pixel_size_A=series.attrs["pixel_size_A"],
        time_s=series["time_s"].values,
        ground_truth=truth,
        kernel=toy_analyze_frame,
    )
    pd.testing.assert_frame_equal(columns.compute().reset_index(drop=True), eager_columns)
    lazy_frames = frames.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(lazy_frames, eager_frames)
    # Each frame saw only its own ground-truth rows, with global frame numbers.
    assert lazy_frames["n_truth"].tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0]


def test_time_average_sums_frames(series):
    summed = series.lowdose.time_average(4)
    assert isinstance(summed.data, da.Array)
    counts = series["counts"].values.astype(np.uint32)
    np.testing.assert_array_equal(summed.values, counts[:8].reshape(2, 4, *counts.shape[1:]).sum(axis=1))


def test_config_for_sums_scales_the_default_rates() -> None:
    from lowdose.analysis.frame import AnalysisConfig
    from lowdose.parallel.analyze import config_for_sums

    default = AnalysisConfig()
    summed = config_for_sums(None, 40)
    assert summed.lambda_vac == pytest.approx(default.lambda_vac * 40)
    assert summed.detection_threshold == pytest.approx(default.detection_threshold * 40)
    assert config_for_sums(None, 1) is None


def test_wrong_arguments_are_named_errors(series, handle):
    from lowdose.errors import LowdoseInputError

    with pytest.raises(LowdoseInputError, match=r"denoised must be a DenoisedSeries dataset.*got str"):
        series.lowdose.columns("denoised", model=handle)
    with pytest.raises(LowdoseInputError, match="has no 'denoised' variable"):
        series.lowdose.columns(series, model=handle)
    for n in (2.5, "40", True):
        with pytest.raises(LowdoseInputError, match="n must be a whole number of frames"):
            series.lowdose.time_average(n)
    assert series.lowdose.time_average(np.int64(4)).sizes["frame"] == 2
    no_counts = series[["time_s"]] if "time_s" in series.data_vars else series.drop_vars("counts")
    with pytest.raises(LowdoseInputError, match="no 'counts' variable"):
        no_counts.lowdose.time_average(2)
