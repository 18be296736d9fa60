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
    assert columns.npartitions == 3  # in memory too: tasks of the series' chunk_frames (4)
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


@pytest.mark.parametrize("selection", [slice(3, 8), [0, 5, 8]])
def test_a_selection_keeps_the_series_frame_numbers_and_their_ground_truth(series, handle, selection):
    truth = pd.DataFrame({"frame": [0, 0, 5], "x_px": [1.0, 2.0, 3.0], "y_px": [1.0, 2.0, 3.0]})
    options = {"model": handle, "kernel": toy_analyze_frame, "ground_truth": truth}
    full = series.lowdose.frames(**options).compute().set_index("frame")
    picked = series.isel(frame=selection)
    part = picked.lowdose.frames(**options).compute().set_index("frame")
    assert part.index.tolist() == picked["frame"].values.tolist()
    pd.testing.assert_frame_equal(part, full.loc[part.index])
    assert part.loc[5, "n_truth"] == 1
    columns = picked.lowdose.columns(**options).compute()
    assert set(columns["frame"]) <= set(part.index)


def test_dims_in_another_order_are_put_back_in_frame_y_x_order(series, handle):
    plain = series.lowdose.denoise(handle, device="cpu")["denoised"]
    turned = series.transpose("y", "x", "frame").lowdose.denoise(handle, device="cpu")["denoised"]
    assert turned.dims == ("frame", "y", "x")
    np.testing.assert_array_equal(turned.values, plain.values)


def test_what_is_not_a_frame_series_is_refused_when_the_graph_is_built(series, handle):
    from lowdose.errors import LowdoseInputError
    from lowdose.parallel.denoise import denoise_series

    with dask.config.set(scheduler=_no_compute):
        with pytest.raises(LowdoseInputError, match="got a DataArray"):
            denoise_series(series["counts"], handle)
        with pytest.raises(LowdoseInputError, match="dtype float32; expected integer electron counts"):
            series.assign(counts=series["counts"] * np.float32(0.7)).lowdose.denoise(handle)
        with pytest.raises(LowdoseInputError, match="device 'gpu': expected auto, cpu, cuda or cuda:N"):
            series.lowdose.denoise(handle, device="gpu")
        den = series.lowdose.denoise(handle)
        with pytest.raises(LowdoseInputError, match="the denoised frames are not the dataset's frames"):
            series.isel(frame=slice(5, 9)).lowdose.frames(
                den.isel(frame=slice(0, 4)), kernel=toy_analyze_frame
            )
        bare = series.lowdose.time_average(4).to_dataset(name="counts")
        with pytest.raises(LowdoseInputError, match=r"attrs\['pixel_size_A'\] is None"):
            bare.lowdose.columns(model=handle)


def test_a_numpy_pixel_size_is_a_pixel_size(series, handle):
    ds = series.assign_attrs(pixel_size_A=np.float32(series.attrs["pixel_size_A"]))
    frames = ds.lowdose.frames(model=handle, kernel=toy_analyze_frame).compute()
    assert len(frames) == series.sizes["frame"]
