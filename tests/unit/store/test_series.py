from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.stats import poisson

from lowdose.errors import StoreError
from lowdose.store.series import (
    FrameAppender,
    append_frames,
    create_frame_series,
    open_series,
    series_attrs,
    smallest_counts_dtype,
    update_series_attrs,
)


def poisson_entropy_bits(lam: float) -> float:
    """Exact Shannon entropy of Poisson(lam) in bits (tail below 1e-300 dropped)."""
    k = np.arange(0, 200)
    p = poisson.pmf(k, lam)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def store_bytes(path: Path, variable: str) -> int:
    return sum(
        f.stat().st_size for f in (path / variable).rglob("*") if f.is_file() and f.name != "zarr.json"
    )


@pytest.mark.parametrize("chunk_frames", [2, 8, 32])
def test_uneven_appends_round_trip(tmp_path: Path, chunk_frames: int) -> None:
    rng = np.random.default_rng(0)
    frames = rng.poisson(0.45, (45, 24, 20)).astype("uint8")
    path = tmp_path / "s.zarr"
    create_frame_series(path, (24, 20), chunk_frames=chunk_frames, frame_rate_hz=20.0)
    total = 0
    for stop in (3, 4, 20, 37, 45):
        total = append_frames(path, frames[total:stop])
    assert total == 45
    ds = open_series(path)
    np.testing.assert_array_equal(ds["counts"].values, frames)
    assert ds["counts"].data.chunks[0][0] == chunk_frames
    np.testing.assert_allclose(ds["time_s"].values, np.arange(45) / 20.0)
    # The store is also a plain xarray-readable zarr.
    plain = xr.open_zarr(path, consolidated=False)
    np.testing.assert_array_equal(plain["counts"].values, frames)


def test_interrupted_append_is_invisible_and_overwritten(tmp_path: Path) -> None:
    import zarr

    path = tmp_path / "s.zarr"
    create_frame_series(path, (8, 8), chunk_frames=4)
    append_frames(path, np.ones((6, 8, 8), "uint8"))
    # Simulate a crash after the data write but before the counter moved.
    group = zarr.open_group(path, mode="r+")
    group["counts"].resize((10, 8, 8))
    group["counts"][6:10] = 9
    assert open_series(path).sizes["frame"] == 6
    append_frames(path, np.full((2, 8, 8), 2, "uint8"))
    counts = open_series(path)["counts"].values
    assert counts.shape[0] == 8 and set(np.unique(counts[6:])) == {2}


def test_appender_with_a_reserve_grows_once_and_shows_only_committed_frames(tmp_path: Path) -> None:
    import zarr

    frames = np.random.default_rng(3).poisson(0.45, (12, 8, 8)).astype("uint8")
    path = tmp_path / "s.zarr"
    create_frame_series(path, (8, 8), chunk_frames=4, frame_rate_hz=40.0)
    appender = FrameAppender(path, reserve=12)
    assert appender.append(frames[:4]) == 4
    assert zarr.open_group(path, mode="r")["counts"].shape == (12, 8, 8)  # grown once, to the reserve
    assert open_series(path).sizes["frame"] == 4  # the reserved frames are not visible
    appender.append(frames[4:8])
    assert appender.append(frames[8:]) == 12
    ds = open_series(path)
    np.testing.assert_array_equal(ds["counts"].values, frames)
    np.testing.assert_allclose(ds["time_s"].values, np.arange(12) / 40.0)
    assert zarr.open_group(path, mode="r")["counts"].shape == (12, 8, 8)


def test_staged_batches_are_invisible_until_committed_in_order(tmp_path: Path) -> None:
    frames = np.random.default_rng(4).poisson(0.45, (16, 8, 8)).astype("uint8")
    path = tmp_path / "s.zarr"
    create_frame_series(path, (8, 8), chunk_frames=4)
    appender = FrameAppender(path, reserve=16)
    first, second = appender.stage(frames[:8]), appender.stage(frames[8:])
    assert (first.start, first.stop, second.start, second.stop) == (0, 8, 8, 16)
    with pytest.raises(StoreError, match="in the order they were staged"):
        appender.commit(second)
    appender.drain()  # both batches' chunks are on disk, neither is visible
    assert open_series(path).sizes["frame"] == 0
    assert appender.commit(first) == 8 and open_series(path).sizes["frame"] == 8
    assert appender.commit(second) == 16
    np.testing.assert_array_equal(open_series(path)["counts"].values, frames)


def test_a_failed_batch_stops_the_appender_and_keeps_what_was_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from lowdose.errors import StorageFullError
    from lowdose.store import series as series_module

    path = tmp_path / "s.zarr"
    create_frame_series(path, (8, 8), chunk_frames=4)
    appender = FrameAppender(path)
    appender.append(np.ones((4, 8, 8), "uint8"))
    real_write = series_module._ChunkFileWriter.write

    def full_at_chunk_2(self: object, index: int, values: np.ndarray) -> None:
        if index == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, index, values)  # type: ignore[arg-type]

    monkeypatch.setattr(series_module._ChunkFileWriter, "write", full_at_chunk_2)
    failing = appender.stage(np.full((8, 8, 8), 2, "uint8"))  # chunks 1 and 2
    after = appender.stage(np.full((4, 8, 8), 3, "uint8"))
    with pytest.raises(StorageFullError, match="appending frames 4–11"):
        appender.commit(failing)
    with pytest.raises(StoreError, match="an earlier batch failed"):
        appender.commit(after)
    appender.drain()
    counts = open_series(path)["counts"].values
    assert counts.shape[0] == 4 and set(np.unique(counts)) == {1}


def test_attribute_updates_are_one_write_and_kept_by_later_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zarr.storage import LocalStore

    path = tmp_path / "s.zarr"
    create_frame_series(path, (8, 8), chunk_frames=4)
    appender = FrameAppender(path)
    appender.update_attrs({"sources": [{"path": "a.tif"}], "detector": "k3"})
    appender.append(np.ones((4, 8, 8), "uint8"))  # its commit must not drop what update_attrs wrote
    attrs = series_attrs(path)
    assert attrs["sources"] == [{"path": "a.tif"}] and attrs["detector"] == "k3" and attrs["n_frames"] == 4
    with pytest.raises(StoreError, match="reserved attrs"):
        appender.update_attrs({"n_frames": 0})

    written: list[str] = []
    real_set = LocalStore.set

    async def recording_set(self: LocalStore, key: str, value: object) -> None:
        written.append(key)
        await real_set(self, key, value)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalStore, "set", recording_set)
    # A completion record (state, sources, dose) lands in one metadata write, never key by key.
    update_series_attrs(path, {"ingest_state": "complete", "sources": [], "dose_e_per_px": 0.5})
    assert written == ["zarr.json"]
    assert series_attrs(path)["ingest_state"] == "complete"


def test_clean_variable_and_catalog_entry(tmp_path: Path) -> None:
    class Entry:
        def __init__(self, urlpath: str) -> None:
            self.urlpath = urlpath

    path = tmp_path / "s.zarr"
    create_frame_series(path, (4, 5), with_clean=True, attrs={"detector_gain": 1.0})
    clean = np.random.default_rng(1).uniform(0, 1, (3, 4, 5)).astype("float32")
    append_frames(path, np.zeros((3, 4, 5), "uint8"), clean=clean)
    ds = open_series(Entry(str(path)))
    np.testing.assert_array_equal(ds["clean"].values, clean)
    assert ds.attrs["detector_gain"] == 1.0
    with pytest.raises(StoreError, match="clean"):
        append_frames(path, np.zeros((1, 4, 5), "uint8"))


def test_values_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    create_frame_series(path, (4, 4))
    bad = np.zeros((2, 4, 4), "uint16")
    bad[1, 2, 2] = 256
    with pytest.raises(StoreError, match=r"frame 1 .*256.*uint8"):
        append_frames(path, bad)
    with pytest.raises(StoreError, match="negative"):
        append_frames(path, -np.ones((1, 4, 4), "int16"))
    with pytest.raises(StoreError, match="integers"):
        append_frames(path, np.zeros((1, 4, 4), "float32"))
    with pytest.raises(StoreError, match="shape"):
        append_frames(path, np.zeros((1, 4, 5), "uint8"))
    assert series_attrs(path)["n_frames"] == 0


def test_existing_store_and_wrong_layout(tmp_path: Path) -> None:
    import zarr

    path = tmp_path / "s.zarr"
    create_frame_series(path, (4, 4))
    with pytest.raises(StoreError):
        create_frame_series(path, (4, 4))
    other = tmp_path / "other.zarr"
    zarr.open_group(other, mode="w").attrs["lowdose_layout"] = "SimulationSet"
    with pytest.raises(StoreError, match="FrameSeries"):
        open_series(other)
    with pytest.raises(StoreError, match="no zarr store"):
        open_series(tmp_path / "missing.zarr")


def test_smallest_dtype() -> None:
    assert smallest_counts_dtype(255) == "uint8"
    assert smallest_counts_dtype(256) == "uint16"
    assert smallest_counts_dtype(70000) == "uint32"


def test_compression_reaches_85_percent_of_entropy_bound(tmp_path: Path) -> None:
    """Bytes on disk per pixel vs the Shannon bound of Poisson(0.45)."""
    entropy = poisson_entropy_bits(0.45)
    assert 1.25 < entropy < 1.28  # sanity of the exact sum
    rng = np.random.default_rng(7)
    path = tmp_path / "s.zarr"
    create_frame_series(path, (256, 256), chunk_frames=32)
    frames = rng.poisson(0.45, (64, 256, 256)).astype("uint8")
    append_frames(path, frames)
    bits_per_px = 8 * store_bytes(path, "counts") / frames.size
    ratio, bound = 8 / bits_per_px, 8 / entropy
    assert ratio >= 0.85 * bound, (ratio, bound)


def test_fsspec_url_round_trip() -> None:
    import uuid

    url = f"memory://lowdose-tests/{uuid.uuid4().hex}/s.zarr"
    frames = np.random.default_rng(3).poisson(0.45, (10, 6, 7)).astype("uint8")
    create_frame_series(url, (6, 7), chunk_frames=4)
    append_frames(url, frames[:5])
    append_frames(url, frames[5:])
    np.testing.assert_array_equal(open_series(url)["counts"].values, frames)


def test_all_zero_chunks_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    create_frame_series(path, (16, 12), chunk_frames=4)
    frames = np.zeros((10, 16, 12), dtype="uint8")
    frames[9, 2, 3] = 7
    append_frames(path, frames)
    stored = sorted(p.name for p in (path / "counts" / "c").iterdir())
    assert stored == ["0", "1", "2"]  # chunks 0 and 1 are all zeros, written nonetheless
    np.testing.assert_array_equal(open_series(path)["counts"].values, frames)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_chunk_files_written_directly_are_zarrs_bytes(tmp_path: Path, dtype: str) -> None:
    import zarr

    frames = np.random.default_rng(4).poisson(3.0, (22, 24, 20)).astype(dtype)
    frames[1, 2, 3] = np.iinfo(dtype).max
    ours, zarrs = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    for path in (ours, zarrs):
        create_frame_series(path, (24, 20), dtype=dtype, chunk_frames=8)
    from lowdose.store.series import _ChunkFileWriter

    assert _ChunkFileWriter.for_array(zarr.open_array(ours / "counts", mode="r")) is not None
    append_frames(ours, frames)  # chunks 0, 1 whole (direct), chunk 2 partial (zarr)
    plain = zarr.open_array(zarrs / "counts", mode="r+")
    plain.resize(frames.shape)
    plain[:] = frames  # zarr's own write path for every chunk
    for index in range(3):
        key = Path("counts", "c", str(index), "0", "0")
        assert (ours / key).read_bytes() == (zarrs / key).read_bytes(), key
    assert not list(ours.rglob("*.partial"))
    np.testing.assert_array_equal(open_series(ours)["counts"].values, frames)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_appends_work_in_a_forked_child(tmp_path: Path) -> None:
    """The chunk-writer thread pool of the parent does not exist in a fork: the child starts its own."""
    import os

    frames = np.random.default_rng(5).poisson(0.45, (12, 8, 8)).astype("uint8")
    parent, child = tmp_path / "parent.zarr", tmp_path / "child.zarr"
    for path in (parent, child):
        create_frame_series(path, (8, 8), chunk_frames=4)
    append_frames(parent, frames[:8])  # the pool now has threads in this process
    pid = os.fork()
    if pid == 0:  # child: exit status 0 only if the multi-chunk append completed
        import signal

        signal.alarm(20)  # a child waiting on the parent's (absent) pool threads dies instead of hanging
        code = 1
        try:
            code = 0 if append_frames(child, frames) == 12 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_array_equal(open_series(child)["counts"].values, frames)
