"""SIGKILL a `lowdose run` mid-run, re-run it, and compare with an uninterrupted run byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lowdose.config import load_config
from lowdose.models.artefact import save_artefact
from lowdose.models.registry import build
from lowdose.parallel.outputs import Progress, read_table
from lowdose.parallel.pipeline import PipelineConfig, run_pipeline
from tests.unit.parallel.tiny import write_series

REPO = Path(__file__).resolve().parents[2]
N_FRAMES, CHUNK = 16, 2


def _pipeline_yaml(tmp_path: Path, series: Path, model: Path, out: Path) -> Path:
    path = tmp_path / f"{out.name}.yaml"
    config = {
        "series": str(series),
        "out": str(out),
        "model": str(model),
        "device": "cpu",
        "batch_frames": 2,
        "analysis": {"polarity": "bright"},
        "cluster": {"name": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False},
        "register_catalog": False,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lowdose", "run", str(config), "--quiet"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes every child with it
    )


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    series = write_series(
        root / "s.zarr", n_frames=N_FRAMES, shape=(64, 64), chunk_frames=CHUNK, with_truth=True
    )
    model = save_artefact(
        root / "model",
        build("compact", base_channels=4, scales=2).eval(),
        name="compact",
        model_config={"base_channels": 4, "scales": 2},
    )
    return root, series, model


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(inputs, tmp_path):
    _, series, model = inputs
    # The uninterrupted reference runs in this process (same config, same cluster shape).
    reference = tmp_path / "reference"
    config = load_config(PipelineConfig, _pipeline_yaml(tmp_path, series, model, reference))
    run_pipeline(config.model_copy(update={"progress": False}))

    killed = tmp_path / "killed"
    config = _pipeline_yaml(tmp_path, series, model, killed)
    proc = _start(config)
    progress = Progress(killed, "analyze")
    n_chunks = N_FRAMES // CHUNK
    try:
        deadline = time.monotonic() + 180
        while len(progress.done_chunks()) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    done_at_kill = len(progress.done_chunks())
    assert 2 <= done_at_kill < n_chunks, f"the kill did not land mid-run ({done_at_kill}/{n_chunks} chunks)"

    _finish(_start(config))
    assert _files(killed / "denoised.zarr") == _files(reference / "denoised.zarr")
    for table in ("columns.parquet", "frames.parquet"):
        resumed, uninterrupted = read_table(killed / table), read_table(reference / table)
        pd.testing.assert_frame_equal(resumed, uninterrupted)
        assert (killed / table).read_bytes() == (reference / table).read_bytes()
    frames = read_table(killed / "frames.parquet")
    assert frames["frame"].tolist() == list(range(N_FRAMES))  # none lost, none duplicated
    assert {"surface_f1", "bulk_f1"} <= set(frames.columns)
    assert len(progress.done_chunks()) == n_chunks
