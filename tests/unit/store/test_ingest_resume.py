"""Re-running ingest is a no-op; an interrupted ingest resumes after its committed frames."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowdose.store.ingest as ingest_module
from lowdose.errors import FormatError, StoreError
from lowdose.store.ingest import ingest
from lowdose.store.series import FrameAppender, StagedFrames, open_series, series_attrs
from tests.unit.store._ser_writer import write_ser

META = {"pixel_size_A": 0.061, "frame_rate_hz": 40.0}


def write_stack(path: Path, n: int = 50) -> np.ndarray:
    data = np.random.default_rng(11).poisson(0.45, (n, 16, 12)).astype("uint8")
    tifffile.imwrite(path, data)
    return data


def test_rerun_is_a_noop(tmp_path: Path) -> None:
    data = write_stack(tmp_path / "a.tif")
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    stamp = (out / "zarr.json").stat().st_mtime_ns
    assert ingest([tmp_path / "a.tif"], out, **META) == out
    assert (out / "zarr.json").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(open_series(out)["counts"].values, data)
    record = series_attrs(out)["sources"][0]
    assert len(record["sha256"]) == 64 and record["n_frames"] == 50


def test_interrupted_ingest_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_stack(tmp_path / "a.tif")
    out = tmp_path / "s.zarr"
    real_commit = FrameAppender.commit
    calls: list[int] = []

    def failing_commit(self: FrameAppender, staged: StagedFrames) -> int:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(staged.stop - staged.start)
        return real_commit(self, staged)

    monkeypatch.setattr(FrameAppender, "commit", failing_commit)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "a.tif"], out, chunk_frames=4, batch_frames=8, **META)
    partial = tmp_path / "s.zarr.partial"
    assert not out.exists() and partial.exists()
    assert series_attrs(partial)["n_frames"] == 24
    with pytest.raises(StoreError, match="did not finish"):
        open_series(partial)

    resumed: list[int] = []

    def counting_commit(self: FrameAppender, staged: StagedFrames) -> int:
        resumed.append(staged.stop - staged.start)
        return real_commit(self, staged)

    monkeypatch.setattr(FrameAppender, "commit", counting_commit)
    ingest([tmp_path / "a.tif"], out, **META)
    assert sum(resumed) == 50 - 24  # committed frames were not re-read
    ds = open_series(out)
    np.testing.assert_array_equal(ds["counts"].values, data)
    assert ds.attrs["dose_e_per_px"] == pytest.approx(data.mean())
    assert not partial.exists()


def test_changed_input_restarts_a_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(tmp_path / "a.tif")
    real_commit = FrameAppender.commit

    def interrupt(self: FrameAppender, staged: StagedFrames) -> int:
        real_commit(self, staged)
        raise KeyboardInterrupt

    monkeypatch.setattr(FrameAppender, "commit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", batch_frames=8, chunk_frames=8, **META)
    monkeypatch.setattr(FrameAppender, "commit", real_commit)
    data = write_stack(tmp_path / "a.tif", n=30)  # same name, other content
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    np.testing.assert_array_equal(open_series(out)["counts"].values, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".tif", ".npy", ".mrc", ".ser"]),
    position=st.floats(0, 1),
    payload=st.binary(min_size=1, max_size=64),
    truncate=st.booleans(),
)
def test_corrupt_bytes_give_format_error_or_valid_store(
    tmp_path_factory: pytest.TempPathFactory, suffix: str, position: float, payload: bytes, truncate: bool
) -> None:
    import mrcfile

    tmp = tmp_path_factory.mktemp("fuzz")
    data = np.random.default_rng(0).poisson(0.45, (6, 10, 8)).astype("uint16")
    src = tmp / f"f{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(src, data, compression="zlib")
    elif suffix == ".npy":
        np.save(src, data)
    elif suffix == ".ser":
        write_ser(src, data, 6.1e-12, 0.025)
    else:
        with mrcfile.new(src) as mrc:
            mrc.set_data(data)
    raw = bytearray(src.read_bytes())
    at = int(position * (len(raw) - 1))
    raw = raw[:at] if truncate else raw[:at] + payload + raw[at + len(payload) :]
    src.write_bytes(bytes(raw))
    out = tmp / "s.zarr"
    try:
        ingest([src], out, **META)
    except FormatError as err:
        assert "\n" not in str(err) and str(src) in str(err)
        assert not out.exists() and not (tmp / "s.zarr.partial").exists()
    else:
        ds = open_series(out)  # whatever was read is a complete, valid store
        assert ds.attrs["ingest_state"] == "complete"


def test_crash_between_completion_marker_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lowdose.store.series import update_series_attrs

    def no_stage(*args: object, **kwargs: object) -> int:
        raise AssertionError("a complete partial store must be renamed, not re-ingested")

    data = write_stack(tmp_path / "a.tif")
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    partial = tmp_path / "s.zarr.partial"
    out.rename(partial)  # as if the process died right before its final rename
    update_series_attrs(partial, {"ingest_state": "complete"})
    monkeypatch.setattr(FrameAppender, "stage", no_stage)
    assert ingest([tmp_path / "a.tif"], out, **META) == out
    assert not partial.exists()
    np.testing.assert_array_equal(open_series(out)["counts"].values, data)


def test_partial_without_recorded_sources_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before the background checksums were recorded: no proof of same inputs, so no resume."""
    from lowdose.store.series import update_series_attrs

    data = write_stack(tmp_path / "a.tif")
    real_commit = FrameAppender.commit
    appended: list[int] = []

    def interrupt_after_two(self: FrameAppender, staged: StagedFrames) -> int:
        if len(appended) == 2:
            raise KeyboardInterrupt
        appended.append(staged.stop - staged.start)
        return real_commit(self, staged)

    monkeypatch.setattr(FrameAppender, "commit", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", chunk_frames=8, batch_frames=8, **META)
    partial = tmp_path / "s.zarr.partial"
    assert series_attrs(partial)["sources"][0]["n_frames"] == 50  # Ctrl-C waits for the checksums
    update_series_attrs(partial, {"sources": []})  # as if SIGKILLed before they were recorded

    appended.clear()

    def counting_commit(self: FrameAppender, staged: StagedFrames) -> int:
        appended.append(staged.stop - staged.start)
        return real_commit(self, staged)

    monkeypatch.setattr(FrameAppender, "commit", counting_commit)
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    assert sum(appended) == 50
    np.testing.assert_array_equal(open_series(out)["counts"].values, data)
    assert series_attrs(out)["sources"][0]["sha256"] == ingest_module.sha256_file(tmp_path / "a.tif")


@pytest.mark.parametrize("n", [1, 256, 257, 258, 600])
def test_counts_total_is_exact_at_the_uint16_limit(n: int) -> None:
    frames = np.full((n, 3, 5), 255, dtype="uint8")  # 257 frames of 255 fill uint16 exactly
    frames[0, 0, 0] = 7
    expected = 255 * frames.size - 248
    assert ingest_module.counts_total(frames) == expected
    assert ingest_module.counts_total(frames.astype("uint16")) == expected
    rng = np.random.default_rng(n)
    poisson = rng.poisson(0.45, (n, 8, 6)).astype("uint8")
    assert ingest_module.counts_total(poisson) == int(poisson.sum(dtype=np.int64))


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.mark.parametrize(
    ("key", "value", "flag"),
    [
        ("pixel_size_A", 0.07, "--pixel-size-A"),
        ("frame_rate_hz", 50.0, "--frame-rate-hz"),
        ("dose_e_per_px", 0.5, "--dose-e-per-px"),
        ("detector", "K3", "--detector"),
    ],
)
def test_rerun_with_other_metadata_is_refused_and_changes_nothing(
    tmp_path: Path, key: str, value: object, flag: str
) -> None:
    write_stack(tmp_path / "a.tif", n=10)
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    before = _store_bytes(out)
    stored = series_attrs(out)[key]
    with pytest.raises(StoreError) as info:
        ingest([tmp_path / "a.tif"], out, **{**META, key: value})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{out}: ")
    assert f"{key} is {stored!r} in the store but {flag} gave {value!r}" in message
    assert "update_series_attrs" in message and "new --out" in message
    assert _store_bytes(out) == before
    # the update the message names does what the flag meant
    from lowdose.store.series import update_series_attrs

    update_series_attrs(out, {key: value})
    assert ingest([tmp_path / "a.tif"], out, **{**META, key: value}) == out


def test_rerun_without_metadata_flags_is_a_noop(tmp_path: Path) -> None:
    write_stack(tmp_path / "a.tif", n=10)
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", detector="K3", dose_e_per_px=0.5, **META)
    before = _store_bytes(out)
    summary = ingest_module.ingest_with_summary([tmp_path / "a.tif"], out)
    assert summary.already_complete and summary.frames_written == 0
    assert _store_bytes(out) == before


def test_crashed_rename_with_other_metadata_finishes_the_rename_then_refuses(tmp_path: Path) -> None:
    from lowdose.store.series import update_series_attrs

    write_stack(tmp_path / "a.tif", n=10)
    out = ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    partial = tmp_path / "s.zarr.partial"
    out.rename(partial)
    update_series_attrs(partial, {"ingest_state": "complete"})
    before = _store_bytes(partial)
    with pytest.raises(
        StoreError, match=r"pixel_size_A is 0\.061 in the store but --pixel-size-A gave 0\.07"
    ):
        ingest([tmp_path / "a.tif"], out, **{**META, "pixel_size_A": 0.07})
    assert not partial.exists() and _store_bytes(out) == before


def test_resumed_ingest_records_the_metadata_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is not complete until the resumed run ends: that run's flags count."""
    data = write_stack(tmp_path / "a.tif", n=24)
    real_commit = FrameAppender.commit

    def interrupt(self: FrameAppender, staged: StagedFrames) -> int:
        real_commit(self, staged)
        raise KeyboardInterrupt

    monkeypatch.setattr(FrameAppender, "commit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "a.tif"], tmp_path / "s.zarr", batch_frames=8, chunk_frames=8, **META)
    monkeypatch.setattr(FrameAppender, "commit", real_commit)
    given = {"pixel_size_A": 0.07, "frame_rate_hz": 50.0, "dose_e_per_px": 0.5, "detector": "K3"}
    summary = ingest_module.ingest_with_summary([tmp_path / "a.tif"], tmp_path / "s.zarr", **given)
    attrs = series_attrs(summary.path)
    assert {key: attrs[key] for key in given} == given and attrs["dose_source"] == "given"
    assert summary.frames_written == 16
    assert summary.measured_dose_e_per_px == pytest.approx(data.mean())


def test_summary_of_a_real_ingest_and_of_its_rerun(tmp_path: Path) -> None:
    data = write_stack(tmp_path / "a.tif", n=50)
    summary = ingest_module.ingest_with_summary([tmp_path / "a.tif"], tmp_path / "s.zarr", **META)
    files = [f for f in summary.path.rglob("*") if f.is_file()]
    assert summary.stored_bytes == sum(f.stat().st_size for f in files) > 0
    assert (summary.n_frames, summary.frame_shape, summary.dtype) == (50, (16, 12), "uint8")
    assert summary.counts_bytes == data.nbytes
    assert summary.compression_ratio == pytest.approx(data.nbytes / summary.stored_bytes)
    assert summary.measured_dose_e_per_px == pytest.approx(data.mean())
    assert summary.frames_written == 50 and summary.source_bytes == data.nbytes
    assert summary.seconds > 0 and summary.mb_per_s == pytest.approx(data.nbytes / 1e6 / summary.seconds)
    text = "\n".join(summary.lines())
    assert f"50 frames of 16 x 12 px, uint8; dose {data.mean():.4g} e/px/frame measured" in text
    assert f"{summary.compression_ratio:.2f}x smaller" in text and "MB/s" in text
    again = ingest_module.ingest_with_summary([tmp_path / "a.tif"], summary.path, **META)
    assert again.already_complete and again.frames_written == 0
    assert again.stored_bytes == summary.stored_bytes
    assert "already complete" in "\n".join(again.lines()) and "MB/s" not in "\n".join(again.lines())
