"""simulate_series: an interrupted run resumes to the same bytes as an uninterrupted one."""

import numpy as np
import pandas as pd
import pytest

import lowdose.store.series as series_store
from lowdose.errors import StoreError
from lowdose.parallel.simulate_series import SeriesSpec, simulate_series
from lowdose.store import schema

SPEC = SeriesSpec(n_frames=40, size_px=64, seed=2, particle="PtNp1", n_states=2, gpts=128, chunk_frames=16)


def test_interrupted_series_resumes_byte_identical(tmp_path, monkeypatch):
    reference = tmp_path / "ref.zarr"
    simulate_series(reference, SPEC, progress=False)

    out = tmp_path / "cut.zarr"
    real_append = series_store.append_frames
    calls = {"n": 0}

    def crash_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies mid-run
        return real_append(*args, **kwargs)

    monkeypatch.setattr(series_store, "append_frames", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        simulate_series(out, SPEC, progress=False)
    monkeypatch.setattr(series_store, "append_frames", real_append)
    assert series_store.open_series(out).sizes["frame"] == 16
    assert not schema.ground_truth_path(out).exists()

    summary = simulate_series(out, SPEC, progress=False)
    assert summary.n_written == 24
    a, b = series_store.open_series(reference), series_store.open_series(out)
    assert a["counts"].values.tobytes() == b["counts"].values.tobytes()
    assert a["clean"].values.tobytes() == b["clean"].values.tobytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(schema.ground_truth_path(reference)), pd.read_parquet(schema.ground_truth_path(out))
    )
    assert np.unique(pd.read_parquet(schema.ground_truth_path(out))["state"]).tolist() == [0, 1]

    with pytest.raises(StoreError, match="different synthetic spec"):
        simulate_series(out, SeriesSpec(n_frames=40, size_px=64, seed=3, gpts=128), progress=False)
    with pytest.raises(StoreError, match="--size"):
        simulate_series(tmp_path / "big.zarr", SeriesSpec(size_px=5000), progress=False)


@pytest.mark.parametrize(
    ("change", "named"),
    [({"size_px": 48}, "size_px 64, asked 48"), ({"defocus_nm": 12.0}, "defocus_nm 10.0, asked 12.0")],
)
def test_store_from_another_spec_is_refused_naming_the_field(tmp_path, change, named):
    # A store made with another --size or --defocus-nm must not be taken as "already done".
    out = tmp_path / "s.zarr"
    series_store.create_frame_series(out, (SPEC.size_px, SPEC.size_px), attrs=SPEC.as_attrs())
    asked = SeriesSpec(**{**SPEC.__dict__, **change})
    with pytest.raises(StoreError, match="different synthetic spec") as err:
        simulate_series(out, asked, progress=False)
    assert named in str(err.value)
    assert str(out) in str(err.value)


def test_store_rendered_with_the_old_temporal_envelope_is_refused(tmp_path):
    # Stores from before explicit focal averaging record the optics without focal_nodes.
    from lowdose.physics.optics import Optics

    out = tmp_path / "s.zarr"
    old_optics = {k: v for k, v in Optics().as_attrs().items() if k != "focal_nodes"}
    series_store.create_frame_series(
        out, (SPEC.size_px, SPEC.size_px), attrs={**SPEC.as_attrs(), **old_optics}
    )
    with pytest.raises(StoreError, match=r"focal_nodes 0\.0, this version renders with 7\.0"):
        simulate_series(out, SPEC, progress=False)


def test_an_out_that_is_no_store_or_cannot_be_made_is_named(tmp_path):
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    (unrelated / "a.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not a FrameSeries store"):
        simulate_series(unrelated, SeriesSpec(n_frames=2, size_px=64))
    assert [p.name for p in unrelated.iterdir()] == ["a.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=r"cannot write there \(.*file is not a writable folder\)"):
        simulate_series(tmp_path / "file" / "s.zarr", SeriesSpec(n_frames=2, size_px=64))
