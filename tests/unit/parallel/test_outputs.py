"""open_denoised: a store of another kind is one StoreError naming it, not a KeyError traceback."""

import numpy as np
import pytest

from lowdose.errors import StoreError
from lowdose.parallel.outputs import create_denoised_store, open_denoised
from lowdose.store.series import create_frame_series


def test_a_frame_series_given_as_denoised_is_refused_by_name(tmp_path):
    # `lowdose analyze s.zarr --denoised s.zarr` (the raw series by mistake)
    series = tmp_path / "s.zarr"
    create_frame_series(series, (8, 8))
    with pytest.raises(StoreError, match="not a DenoisedSeries") as err:
        open_denoised(series)
    assert str(series) in str(err.value)
    assert "'FrameSeries'" in str(err.value)


def test_a_denoised_store_still_opens(tmp_path):
    path = tmp_path / "denoised.zarr"
    attrs = {"model_id": "m", "model_sha256": "0" * 64, "pixel_size_A": 0.061}
    create_denoised_store(
        path,
        n_frames=4,
        frame_shape=(8, 8),
        chunk_frames=4,
        dtype="float32",
        time_s=np.arange(4) / 40.0,
        attrs=attrs,
    )
    assert open_denoised(path)["denoised"].shape == (4, 8, 8)


def test_the_run_folder_given_as_denoised_points_inside(tmp_path):
    # `--denoised run` instead of `--denoised run/denoised.zarr`
    store = tmp_path / "run" / "denoised.zarr"
    create_denoised_store(
        store,
        n_frames=4,
        frame_shape=(8, 8),
        chunk_frames=4,
        dtype="float32",
        time_s=np.arange(4) / 40.0,
        attrs={"model_id": "m", "model_sha256": "0" * 64, "pixel_size_A": 0.061},
    )
    with pytest.raises(StoreError, match="no DenoisedSeries store here") as err:
        open_denoised(tmp_path / "run")
    assert f"did you mean {store}?" in str(err.value)


def test_run_outputs_are_the_runs_files_and_its_averaged_tables_only(tmp_path):
    from lowdose.parallel.outputs import run_outputs
    from lowdose.store.catalog import averaged_table_frames

    for name in ("columns.parquet", "frames_avg40.parquet", "columns_avg3.parquet", "frames_avgx.parquet"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("the user's")
    found = sorted(p.name for p in run_outputs(tmp_path))
    assert found == ["columns.parquet", "columns_avg3.parquet", "frames_avg40.parquet"]
    assert averaged_table_frames("frames_avg40.parquet", "frames") == 40
    assert averaged_table_frames("frames_avg40.parquet", "columns") is None
    assert averaged_table_frames("frames_avgx.parquet", "frames") is None
    assert averaged_table_frames("frames.parquet", "frames") is None
