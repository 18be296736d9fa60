"""StorePath on the local disk and on a real fsspec filesystem (the in-memory one); outputs through it."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from lowdose.errors import StoreError
from lowdose.parallel import outputs
from lowdose.store.location import StorePath, as_location, check_output_folder, is_url
from lowdose.store.schema import ground_truth_location, ground_truth_path


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        yield StorePath.of(tmp_path / "root")
        return
    url = f"memory://ld-{uuid.uuid4().hex}"
    yield StorePath.of(url)
    memory = fsspec.filesystem("memory")
    if memory.exists(url):
        memory.rm(url, recursive=True)


def test_urls_stay_strings_and_paths_become_paths():
    assert is_url("s3://b/run") and not is_url("/data/run") and not is_url(Path("run"))
    assert as_location("s3://b/run/") == "s3://b/run"
    assert as_location("a/b.zarr") == Path("a/b.zarr")
    url = StorePath.of("s3://b/run", {"anon": True})
    assert url.remote and str(url / "x.parquet") == "s3://b/run/x.parquet"
    assert (url / "x").storage_options == {"anon": True}
    assert url.with_name("other").location == "s3://b/other" and url.name == "run"
    assert url.zarr_kwargs() == {"storage_options": {"anon": True}}
    local = StorePath.of("a/b", {"anon": True})
    assert not local.remote and local.zarr_kwargs() == {} and local.path == Path("a/b")
    with pytest.raises(StoreError, match="a local path is needed"):
        _ = url.path


def test_ground_truth_beside_a_local_or_remote_store():
    assert ground_truth_location("s3://b/x/s.zarr").location == "s3://b/x/s.columns.parquet"
    assert ground_truth_location("/d/s.zarr").native() == Path("/d/s.columns.parquet")
    assert ground_truth_path("/d/s.zarr") == Path("/d/s.columns.parquet")
    with pytest.raises(StoreError, match="ground_truth_location"):
        ground_truth_path("s3://b/x/s.zarr")


def test_file_operations(root):
    marker = root / "_progress" / "denoise" / "chunk-000001.done"
    assert not root.exists() and root.glob("*") == []
    marker.write_bytes(b"{}")
    (marker.parent / "chunk-000000.done").write_bytes(b"[]")
    assert marker.exists() and marker.is_file() and not marker.parent.is_file()
    assert [p.name for p in marker.parent.glob("chunk-*.done")] == ["chunk-000000.done", "chunk-000001.done"]
    assert marker.read_text() == "{}"
    marker.write_bytes(b"{1}")  # replaced whole
    assert marker.read_bytes() == b"{1}"
    marker.unlink()
    marker.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        marker.unlink(missing_ok=False)
    assert [p.name for p in marker.parent.glob("*.done")] == ["chunk-000000.done"]
    root.rmtree()
    assert not root.exists()
    root.rmtree()  # missing: nothing to do


def test_progress_parts_and_tables(root):
    progress = outputs.Progress(root, "analyze")
    assert progress.manifest() is None and progress.done_chunks() == set()
    assert not progress.check_or_start({"a": 1}, root)
    progress.commit_manifest({"a": 1})
    progress.mark_done(1, {"chunk": 1})
    progress.mark_done(0, {"chunk": 0})
    assert progress.check_or_start({"a": 1}, root) and progress.done_chunks() == {0, 1}
    frames = [pd.DataFrame({"frame": [2 * c, 2 * c + 1], "x": [0.5, 1.5]}) for c in range(3)]
    parts = outputs.parts_dir(root, "frames")
    for chunk, frame in enumerate(frames):
        outputs.write_parquet_atomic(frame, parts / outputs.part_name(chunk))
    target = root / "frames.parquet"
    outputs.consolidate(parts, target, [0, 1, 2])
    expected = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(outputs.read_table(target.location), expected)
    pd.testing.assert_frame_equal(outputs.read_table(parts), expected)
    (parts / outputs.part_name(1)).unlink()
    with pytest.raises(StoreError, match="part-000001"):
        outputs.consolidate(parts, target, [0, 1, 2])


def test_an_output_folder_in_a_zarr_store_or_on_a_file_is_refused(tmp_path: Path) -> None:
    import zarr

    store = tmp_path / "set.zarr"
    zarr.open_group(store, mode="w")
    (tmp_path / "notes.txt").write_text("x")
    refused = {
        store: "is the zarr store",
        store / "report": f"lies inside the zarr store {store}",
        tmp_path / "notes.txt": "exists and is not a folder",
        tmp_path / "notes.txt" / "sub": "notes.txt is not a writable folder",
    }
    for out, message in refused.items():
        with pytest.raises(StoreError, match=message):
            check_output_folder(out)
    assert check_output_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checked, not created


def test_cli_names_a_path_it_cannot_create_on_one_line(tmp_path: Path, capsys) -> None:
    """An OSError about a path (here: OUT below a file) is one line and exit 2, not a traceback."""
    from tests.unit.inprocess import lowdose_main
    from tests.unit.parallel.tiny import write_series

    series = write_series(tmp_path / "s.zarr", n_frames=2, shape=(32, 32), chunk_frames=2)
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "run"
    ran = lowdose_main(capsys, "denoise", str(series), "--out", str(out), "--no-catalog", "--quiet")
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip().splitlines() == [f"lowdose: error: {out}: Not a directory"]
