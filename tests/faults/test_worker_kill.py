"""SIGKILL a Dask worker process while the pipeline denoises; the run must finish identically.

A real LocalCluster (two worker processes under nannies) runs the pipeline twice:
once untouched (the reference) and once while a worker that holds denoising tasks is
killed with SIGKILL. The scheduler reschedules that worker's tasks on the survivor
(and the nanny restarts the dead one); every chunk is written exactly once per
completion marker, so the outputs must be byte-identical to the reference.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.faults.conftest import duplicates_and_missing, tree_bytes

pytestmark = pytest.mark.slow

N_FRAMES, CHUNK = 24, 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from lowdose.models.artefact import save_artefact
    from lowdose.models.registry import build
    from tests.unit.parallel.tiny import write_series

    root = tmp_path_factory.mktemp("worker-kill")
    series = write_series(root / "s.zarr", n_frames=N_FRAMES, shape=(96, 96), chunk_frames=CHUNK)
    model = save_artefact(
        root / "model",
        build("compact", base_channels=4, scales=2).eval(),
        name="compact",
        model_config={"base_channels": 4, "scales": 2},
    )
    return series, model


def _config(series: Path, model: Path, out: Path):
    from lowdose.parallel.pipeline import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "series": str(series),
            "out": str(out),
            "model": str(model),
            "device": "cpu",
            "batch_frames": 2,
            "analysis": {"polarity": "bright"},
            "register_catalog": False,
            "progress": False,
        }
    )


def _busy_worker(client, deadline: float) -> str | None:
    """Address of a worker holding denoise tasks, once the run is under way."""
    while time.monotonic() < deadline:
        for address, keys in client.processing().items():
            if any("denoise" in str(key) or "chunk_task" in str(key) for key in keys):
                return address
        time.sleep(0.01)
    return None


def test_worker_sigkilled_mid_denoise_completes_identically(inputs, tmp_path, faults):
    from distributed import Client, LocalCluster

    from lowdose.parallel.outputs import Progress, read_table
    from lowdose.parallel.pipeline import run_pipeline

    series, model = inputs
    reference, faulted = tmp_path / "reference", tmp_path / "faulted"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    try:
        run_pipeline(_config(series, model, reference), client)

        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["result"] = run_pipeline(_config(series, model, faulted), client)
            except BaseException as err:  # handed to the test thread below
                outcome["error"] = err

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        victim = _busy_worker(client, time.monotonic() + 60)
        assert victim is not None, "no worker ever held a denoise task"
        pid = client.run(os.getpid, workers=[victim])[victim]
        held = len(client.processing().get(victim, ()))
        done_before = len(Progress(faulted, "denoise").done_chunks())
        os.kill(pid, signal.SIGKILL)
        record = faults.inject(
            "SIGKILL Dask worker mid-denoise",
            f"worker pid {pid} holding {held} tasks, {done_before}/{N_FRAMES // CHUNK} chunks written",
        )
        runner.join(timeout=100)
        assert not runner.is_alive(), "the run did not finish after the worker was killed"
        if "error" in outcome:
            faults.judge(record, intact=False)
            raise outcome["error"]  # type: ignore[misc]
    finally:
        client.close()
        cluster.close(timeout=120)  # generous: closing nannies is slow on a loaded machine

    frames = read_table(faulted / "frames.parquet")["frame"].tolist()
    lost, duplicated = duplicates_and_missing(frames, range(N_FRAMES))
    identical = tree_bytes(faulted / "denoised.zarr") == tree_bytes(reference / "denoised.zarr") and all(
        (faulted / t).read_bytes() == (reference / t).read_bytes()
        for t in ("columns.parquet", "frames.parquet")
    )
    faults.judge(record, frames_lost=lost, frames_duplicated=duplicated, intact=identical)
    assert (lost, duplicated) == (0, 0)
    assert identical
