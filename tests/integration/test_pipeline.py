"""The pipeline end to end on a real in-process Dask cluster, with a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from lowdose.errors import LowdoseInputError
from lowdose.parallel.cluster import connect
from lowdose.parallel.denoise import denoise_frames
from lowdose.parallel.outputs import Progress, open_denoised, read_table
from lowdose.parallel.pipeline import PipelineConfig, run_pipeline
from lowdose.store.catalog import open_catalog
from lowdose.store.schema import COLUMN_TABLE_COLUMNS, Layout, validate
from lowdose.store.series import open_series
from tests.unit.parallel.tiny import TinyConv, tiny_handle, toy_analyze_frame, write_series

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def client():
    with connect("local", n_workers=1, threads_per_worker=2, processes=False, quiet=True) as c:
        yield c


@pytest.fixture(scope="module")
def handle():
    return tiny_handle(TinyConv(n_layers=3, width=4, seed=1))


def _config(series: Path, out: Path, **extra) -> PipelineConfig:
    fields = {"series": series, "out": out, "register_catalog": False, "progress": False}
    return PipelineConfig.model_validate({**fields, **extra})


def _zarr_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_run_writes_denoised_and_tables(tmp_path, client, handle):
    series = write_series(tmp_path / "s.zarr", n_frames=10, shape=(48, 40), chunk_frames=4, with_truth=True)
    result = run_pipeline(_config(series, tmp_path / "out"), client, model=handle, kernel=toy_analyze_frame)
    assert (result.n_chunks, result.chunks_run, result.chunks_skipped) == (3, 3, 0)

    den = open_denoised(tmp_path / "out" / "denoised.zarr")
    validate(den, Layout.DENOISED_SERIES)
    assert den.attrs["model_sha256"] == handle.sha256
    counts = open_series(series)["counts"].values
    np.testing.assert_array_equal(den["denoised"].values, denoise_frames(counts, handle, device="cpu"))

    columns = read_table(tmp_path / "out" / "columns.parquet")
    frames = read_table(tmp_path / "out" / "frames.parquet")
    assert list(columns.columns[: len(COLUMN_TABLE_COLUMNS)]) == list(COLUMN_TABLE_COLUMNS)
    assert frames["frame"].tolist() == list(range(10))
    assert frames["counts"].tolist() == counts.reshape(10, -1).sum(axis=1).tolist()
    assert (frames["n_truth"] == 4).all()  # each frame got its own ground truth rows
    np.testing.assert_allclose(frames["time_s"], np.arange(10) / 40.0)

    again = run_pipeline(
        _config(series, tmp_path / "out", register_catalog=True),
        client,
        model=handle,
        kernel=toy_analyze_frame,
    )
    assert (again.chunks_run, again.chunks_skipped) == (0, 3)
    catalog = open_catalog(str(again.outputs["catalog"]), allow_absolute=True)
    assert set(catalog.products_of("s")) >= {"DenoisedSeries", "ColumnTable", "FrameTable"}
    assert len(catalog.open("out.frames")) == 10


def test_a_tta_run_is_the_eager_self_ensemble_and_a_rerun_with_another_tta_is_refused(
    tmp_path, client, handle
):
    series = write_series(tmp_path / "s.zarr", n_frames=6, shape=(40, 48), chunk_frames=3)
    run_pipeline(_config(series, tmp_path / "out", stages=["denoise"], tta=4), client, model=handle)
    den = open_denoised(tmp_path / "out" / "denoised.zarr")
    assert den.attrs["tta"] == 4
    counts = open_series(series)["counts"].values
    np.testing.assert_array_equal(den["denoised"].values, denoise_frames(counts, handle, device="cpu", tta=4))
    with pytest.raises(LowdoseInputError, match="tta differ"):
        run_pipeline(_config(series, tmp_path / "out", stages=["denoise"]), client, model=handle)
    with pytest.raises(ValueError, match="tta"):
        _config(series, tmp_path / "other", tta=3)


def test_an_analysis_is_not_resumed_on_frames_denoised_with_another_tta(tmp_path, client, handle):
    series = write_series(tmp_path / "s.zarr", n_frames=6, shape=(40, 48), chunk_frames=3, with_truth=True)
    for name, tta in (("one", 1), ("four", 4)):
        run_pipeline(_config(series, tmp_path / name, stages=["denoise"], tta=tta), client, model=handle)
    ana = tmp_path / "ana"
    first = run_pipeline(
        _config(series, ana, stages=["analyze"], denoised=tmp_path / "four" / "denoised.zarr"),
        client,
        kernel=toy_analyze_frame,
    )
    assert first.chunks_run == 2
    assert Progress(ana, "analyze").manifest()["denoised"] == f"{handle.sha256}+tta4"
    # same model, other denoising: the analysis made from the tta-4 frames is not reused for them
    with pytest.raises(LowdoseInputError, match="denoised differ"):
        run_pipeline(
            _config(series, ana, stages=["analyze"], denoised=tmp_path / "one" / "denoised.zarr"),
            client,
            kernel=toy_analyze_frame,
        )
    # an analysis of single-pass frames keeps the manifest of runs made before the option
    run_pipeline(
        _config(series, tmp_path / "ana1", stages=["analyze"], denoised=tmp_path / "one" / "denoised.zarr"),
        client,
        kernel=toy_analyze_frame,
    )
    assert Progress(tmp_path / "ana1", "analyze").manifest()["denoised"] == handle.sha256


def test_series_and_outputs_at_an_fsspec_url_match_the_local_run(tmp_path, client, handle):
    """Series in and outputs out through fsspec (the in-memory filesystem, shared by the threads)."""
    import uuid

    import fsspec

    series = write_series(tmp_path / "s.zarr", n_frames=8, shape=(32, 32), chunk_frames=4, with_truth=True)
    root = f"memory://lowdose-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    memory.put(str(series), f"{root}/s.zarr", recursive=True)
    memory.pipe_file(f"{root}/s.columns.parquet", (tmp_path / "s.columns.parquet").read_bytes())
    local = run_pipeline(
        _config(series, tmp_path / "local", time_average_frames=2),
        client,
        model=handle,
        kernel=toy_analyze_frame,
    )
    config = _config(f"{root}/s.zarr", f"{root}/run/", time_average_frames=2)
    assert config.out == f"{root}/run"  # a URL stays a string ('s3://b' as a Path would be 's3:/b')
    remote = run_pipeline(config, client, model=handle, kernel=toy_analyze_frame)
    try:
        assert remote.chunks_run == 2 and remote.outputs["frames"] == f"{root}/run/frames.parquet"
        den = open_denoised(remote.outputs["denoised"])
        assert den.attrs["source_series"] == f"{root}/s.zarr"
        np.testing.assert_array_equal(
            den["denoised"].values, open_denoised(local.outputs["denoised"])["denoised"].values
        )
        for name in ("columns.parquet", "frames.parquet", "frames_avg2.parquet"):
            pd.testing.assert_frame_equal(
                read_table(f"{root}/run/{name}"), read_table(tmp_path / "local" / name)
            )
        assert (read_table(f"{root}/run/frames.parquet")["n_truth"] == 4).all()  # ground truth read remotely
        assert Progress(f"{root}/run", "analyze").done_chunks() == {0, 1}
        again = run_pipeline(config, client, model=handle, kernel=toy_analyze_frame)
        assert (again.chunks_run, again.chunks_skipped) == (0, 2)
    finally:
        memory.rm(root, recursive=True)


def test_remote_outputs_are_not_registered_in_the_local_catalog():
    from lowdose.errors import ConfigError

    with pytest.raises(ValueError, match="register_catalog: the catalog records local products only"):
        PipelineConfig.model_validate({"series": "s3://b/s.zarr", "out": "/tmp/out"})
    from lowdose.config.base import validate_config

    with pytest.raises(ConfigError, match="--no-catalog"):
        validate_config(PipelineConfig, {"series": "s.zarr", "out": "s3://b/run"}, "p.yaml")


def test_resume_after_a_crash_is_byte_identical(tmp_path, client, handle):
    series = write_series(tmp_path / "s.zarr", n_frames=12, shape=(32, 32), chunk_frames=4)
    cfg = _config(series, tmp_path / "a")
    run_pipeline(cfg, client, model=handle, kernel=toy_analyze_frame)
    reference = _zarr_bytes(tmp_path / "a" / "denoised.zarr")
    ref_bytes = {t: (tmp_path / "a" / t).read_bytes() for t in ("columns.parquet", "frames.parquet")}
    ref_columns = read_table(tmp_path / "a" / "columns.parquet")
    ref_frames = read_table(tmp_path / "a" / "frames.parquet")

    # Simulate a crash in chunk 1 after its zarr write but before its marker, and in
    # chunk 2 halfway through the chunk file: torn data, no markers.
    for stage in ("denoise", "analyze"):
        for chunk in (1, 2):
            Progress(tmp_path / "a", stage).marker(chunk).unlink()
    # Chunk 0 was denoised but not analysed: its frames are read back, not recomputed.
    Progress(tmp_path / "a", "analyze").marker(0).unlink()
    torn = tmp_path / "a" / "denoised.zarr" / "denoised" / "c" / "2" / "0" / "0"
    torn.write_bytes(torn.read_bytes()[:10])
    (tmp_path / "a" / "_parts" / "columns" / "part-000001.parquet").unlink()
    (tmp_path / "a" / "_parts" / "frames" / "part-000002.parquet").write_bytes(b"garbage")
    (tmp_path / "a" / "frames.parquet").unlink()  # as if killed before the tables were assembled

    result = run_pipeline(cfg, client, model=handle, kernel=toy_analyze_frame)
    assert (result.chunks_run, result.chunks_skipped) == (3, 0)
    assert _zarr_bytes(tmp_path / "a" / "denoised.zarr") == reference
    pd.testing.assert_frame_equal(read_table(tmp_path / "a" / "columns.parquet"), ref_columns)
    pd.testing.assert_frame_equal(read_table(tmp_path / "a" / "frames.parquet"), ref_frames)
    assert {t: (tmp_path / "a" / t).read_bytes() for t in ref_bytes} == ref_bytes


def test_refuses_to_mix_runs_and_separate_stages_agree(tmp_path, client, handle):
    series = write_series(tmp_path / "s.zarr", n_frames=8, shape=(32, 32), chunk_frames=4)
    run_pipeline(_config(series, tmp_path / "run"), client, model=handle, kernel=toy_analyze_frame)
    other = tiny_handle(TinyConv(n_layers=3, width=4, seed=2))
    with pytest.raises(LowdoseInputError, match="model_sha256"):
        run_pipeline(_config(series, tmp_path / "run"), client, model=other, kernel=toy_analyze_frame)

    # denoise, then analyze separately (float16 output) == run in one go at float16.
    run_pipeline(
        _config(series, tmp_path / "sep", stages=["denoise"], out_dtype="float16"), client, model=handle
    )
    den_path = tmp_path / "sep" / "denoised.zarr"
    run_pipeline(
        _config(series, tmp_path / "sep", stages=["analyze"], denoised=den_path, time_average_frames=2),
        client,
        kernel=toy_analyze_frame,
    )
    run_pipeline(
        _config(series, tmp_path / "one", out_dtype="float16"), client, model=handle, kernel=toy_analyze_frame
    )
    for name in ("columns.parquet", "frames.parquet"):
        separate, fused = read_table(tmp_path / "sep" / name), read_table(tmp_path / "one" / name)
        pd.testing.assert_frame_equal(separate, fused)
    averaged = read_table(tmp_path / "sep" / "frames_avg2.parquet")
    assert averaged["frame"].tolist() == [0, 1, 2, 3]
    counts = open_series(series)["counts"].values.astype(int)
    assert averaged["counts"].tolist() == counts.reshape(4, -1).sum(axis=1).tolist()
    manifest = json.loads((tmp_path / "sep" / "_progress" / "avg2" / "manifest.json").read_text())
    assert manifest["time_average_frames"] == 2
    assert zarr.open_array(str(den_path), path="denoised").dtype == np.float16


def _failing_kernel(*args, **kwargs):
    raise RuntimeError("analysis kernel failed")


def test_a_failed_run_removes_the_out_it_created_only_while_nothing_is_done(tmp_path, handle):
    """On the cluster run_pipeline starts itself: a finished chunk keeps OUT, none removes it."""
    series = write_series(tmp_path / "s.zarr", n_frames=4, shape=(32, 32), chunk_frames=2)
    cluster = {"name": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False}
    # denoise + analyze: a chunk's denoised frames are written and marked done before its analysis fails
    both = tmp_path / "both"
    with pytest.raises(RuntimeError, match="analysis kernel failed"):
        run_pipeline(_config(series, both, cluster=cluster), model=handle, kernel=_failing_kernel)
    done = Progress(both, "denoise").done_chunks()
    assert done, "no chunk was denoised before the failure"
    den = open_denoised(both / "denoised.zarr")["denoised"].values
    assert np.isfinite(den[2 * min(done)]).all()

    # analyze only: the analysis fails on every chunk, nothing is done, OUT goes again
    only = tmp_path / "analyze-only"
    config = _config(series, only, cluster=cluster, stages=["analyze"], denoised=both / "denoised.zarr")
    with pytest.raises(RuntimeError, match="analysis kernel failed"):
        run_pipeline(config, kernel=_failing_kernel)
    assert not only.exists()
    assert Progress(both, "denoise").done_chunks() == done  # the input it read is untouched


def test_overwrite_deletes_only_the_runs_own_outputs_and_never_an_input(tmp_path, client, handle):
    work = tmp_path / "work"
    series = write_series(work / "s.zarr", n_frames=4, shape=(32, 32), chunk_frames=2)
    series_files = _zarr_bytes(series)
    (work / "thesis.docx").write_bytes(b"years of work")
    # OUT = the folder that holds the series and a user's file: --overwrite keeps both
    run_pipeline(_config(series, work), client, model=handle, kernel=toy_analyze_frame)
    first = _zarr_bytes(work / "denoised.zarr")
    (work / "_parts" / "stale.txt").write_text("from an earlier run")
    run_pipeline(_config(series, work), client, model=handle, kernel=toy_analyze_frame, overwrite=True)
    assert (work / "thesis.docx").read_bytes() == b"years of work"
    assert _zarr_bytes(series) == series_files
    assert not (work / "_parts" / "stale.txt").exists()
    assert _zarr_bytes(work / "denoised.zarr") == first  # redone from scratch, the same

    # OUT = the series store itself, or a folder inside it: refused, with or without --overwrite
    for out in (series, series / "results"):
        for overwrite in (False, True):
            with pytest.raises(LowdoseInputError, match=r"is the series store .* or inside it"):
                run_pipeline(_config(series, out), client, model=handle, overwrite=overwrite)
    assert _zarr_bytes(series) == series_files and not (series / "results").exists()

    # analyze-only reading OUT/denoised.zarr: --overwrite would delete its input
    config = _config(series, work, stages=["analyze"], denoised=work / "denoised.zarr")
    with pytest.raises(LowdoseInputError, match=r"--overwrite would delete .*denoised\.zarr, which holds"):
        run_pipeline(config, client, kernel=toy_analyze_frame, overwrite=True)
    assert _zarr_bytes(work / "denoised.zarr") == first

    # OUT an existing file
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LowdoseInputError, match=r"notes\.txt exists and is not a folder"):
        run_pipeline(_config(series, tmp_path / "notes.txt"), client, model=handle)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_series_identity_compares_the_sources_data_not_where_they_were_read():
    from lowdose.errors import LowdoseInputError
    from lowdose.parallel.pipeline import _refuse_other_series

    record = {"path": "/a/x.tif", "dataset": None, "sha256": "ab", "n_frames": 4, "size_bytes": 9}
    moved = {**record, "path": "/b/x.tif"}
    _refuse_other_series("d", {"sources": [record]}, "s", {"sources": [moved]})  # same data, moved
    with pytest.raises(LowdoseInputError, match="the series' sources differs"):
        _refuse_other_series("d", {"sources": [record]}, "s", {"sources": [{**record, "sha256": "cd"}]})
    _refuse_other_series("d", {"synthetic_seed": 1}, "s", {})  # not recorded on one side: not compared
