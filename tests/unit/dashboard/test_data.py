from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lowdose.dashboard.data import SeriesView, _ChunkCache, block_reduce, decimate
from lowdose.errors import StoreError
from lowdose.store.catalog import open_catalog, register, register_run_outputs
from tests.catalog_products import write_series_products


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> SeriesView:
    folder = tmp_path_factory.mktemp("view")
    products = write_series_products(folder, n_frames=20, size=32)
    cat = folder / "c.yaml"
    register(cat, "s", products["series"])
    register_run_outputs(cat, folder, prefix="s", series="s")
    return SeriesView(open_catalog(cat), "s")


def test_decimate_keeps_extremes_and_size() -> None:
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000.0)
    y[54_321] = 50.0
    xd, yd = decimate(x, y, max_points=2000)
    assert len(xd) <= 2000
    assert yd.max() == 50.0 and 54_321 in xd
    assert decimate(x[:10], y[:10])[0].size == 10


def test_block_reduce_fits_and_averages() -> None:
    image = np.arange(1200 * 800, dtype=np.float32).reshape(1200, 800)
    small, factor = block_reduce(image, max_px=512)
    assert factor == 3 and max(small.shape) <= 512
    assert small[0, 0] == pytest.approx(image[:3, :3].mean())


def test_chunk_cache_matches_direct_reads() -> None:
    data = np.random.default_rng(0).integers(0, 5, (50, 4, 4)).astype(np.uint8)
    array = xr.DataArray(data, dims=("frame", "y", "x")).chunk({"frame": 16})
    cache = _ChunkCache(array, capacity=2)
    for i in (0, 15, 16, 49, 3):
        np.testing.assert_array_equal(cache.frame(i), data[i])
    assert len(cache.blocks) == 2
    np.testing.assert_allclose(cache.mean(10, 20), data[10:21].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(cache.mean(0, 49), data.mean(axis=0), rtol=1e-6)


def test_views_of_a_series(view: SeriesView) -> None:
    assert view.n_frames == 20 and view.shape == (32, 32)
    raw = xr.open_zarr(view.catalog.location("s"), consolidated=False)["counts"].isel(frame=7).values
    np.testing.assert_array_equal(view.image("raw counts", 7), raw)
    assert view.image("denoised", 7).dtype == np.float32
    avg = view.image("time average", 7, n_average=4)
    full = xr.open_zarr(view.catalog.location("s"), consolidated=False)["counts"].values
    np.testing.assert_allclose(avg, full[4:8].mean(axis=0), rtol=1e-6)
    lmap = view.image("likelihood map", 7)
    cols = view.columns_at(7)
    assert np.isfinite(lmap).sum() > 0
    ix, iy = int(np.rint(cols.x_px[0])), int(np.rint(cols.y_px[0]))
    assert lmap[iy, ix] == pytest.approx(cols.llr[0])
    with pytest.raises(StoreError, match="unknown view mode"):
        view.image("bogus", 0)


def test_columns_history_and_exports(view: SeriesView) -> None:
    table = pd.read_parquet(Path(view.catalog.location("s.columns")))
    cols = view.columns_at(5)
    assert len(cols.x_px) == (table["frame"] == 5).sum()
    history = view.column_history(cols.x_px[0] + 0.4, cols.y_px[0] - 0.3, 5)
    assert history["frame"].is_monotonic_increasing and history["frame"].is_unique
    assert len(history) == 20  # the column drifts by < 3 px per frame, so it is tracked throughout
    row = table[(table["frame"] == 5) & (table["x_px"] == cols.x_px[0]) & (table["y_px"] == cols.y_px[0])]
    assert history.loc[history["frame"] == 5, "llr"].item() == pytest.approx(row["llr"].item())
    assert view.column_history(1000.0, 1000.0, 5).shape[0] <= 20
    assert view.frame_table_csv().decode().splitlines()[0].startswith("frame,time_s")
    assert len(view.columns_csv(5).decode().splitlines()) == len(cols.x_px) + 1
    png = view.frame_png("raw counts", 5)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert view.time_series_fields()[0] == "n_surface"
    frames, values = view.curve("mean_llr")
    assert len(frames) == 20 and np.isfinite(values).all()


def test_time_averaged_tables_are_registered_but_not_shown_as_the_frame_table(tmp_path: Path) -> None:
    products = write_series_products(tmp_path, n_frames=20, size=32)
    averaged = tmp_path / "avg"
    averaged.mkdir()
    frames = pd.read_parquet(tmp_path / "frames.parquet")
    frames.iloc[:5].assign(frame=range(5)).to_parquet(averaged / "frames_avg4.parquet")
    pd.read_parquet(tmp_path / "columns.parquet").to_parquet(averaged / "columns_avg4.parquet")
    cat = tmp_path / "c.yaml"
    register(cat, "s", products["series"])
    # an averaged run registered before the per-frame one: listed first for the series
    register_run_outputs(cat, averaged, prefix="early", series="s")
    register_run_outputs(cat, tmp_path, prefix="s", series="s")
    catalog = open_catalog(cat)
    assert catalog.list()[1:3] == ["early.columns_avg4", "early.frames_avg4"]
    assert catalog.entries["early.frames_avg4"].metadata["frames_per_sum"] == 4
    assert catalog.entries["early.columns_avg4"].kind == "ColumnTable"
    assert len(catalog.open("early.frames_avg4")) == 5
    view = SeriesView(catalog, "s")
    assert view.products["FrameTable"] == "s.frames" and view.products["ColumnTable"] == "s.columns"
    chosen = SeriesView(catalog, "s", products={"FrameTable": "early.frames_avg4"})
    assert chosen.products["FrameTable"] == "early.frames_avg4"
