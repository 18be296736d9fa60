"""Fixtures for the deploy tests: a tiny series + model, real `dask scheduler`/`dask worker` processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.unit.parallel.tiny import write_series

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
N_FRAMES, SHAPE, CHUNK = 8, (48, 48), 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=timeout_s)


@pytest.fixture(scope="session")
def deploy_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny FrameSeries with ground truth and a tiny saved model artefact."""
    from lowdose.models.artefact import save_artefact
    from lowdose.models.registry import build

    root = tmp_path_factory.mktemp("deploy")
    series = write_series(
        root / "s.zarr", n_frames=N_FRAMES, shape=SHAPE, chunk_frames=CHUNK, with_truth=True
    )
    model = save_artefact(
        root / "model",
        build("compact", base_channels=4, scales=2).eval(),
        name="compact",
        model_config={"base_channels": 4, "scales": 2},
    )
    return series, model


def pipeline_yaml(
    path: Path, series: str | Path, out: str | Path, model: Path, cluster: dict | None = None
) -> Path:
    config = {
        "series": str(series),
        "out": str(out),
        "model": str(model),
        "device": "cpu",
        "batch_frames": 2,
        "analysis": {"polarity": "bright"},
        "register_catalog": False,
    }
    if cluster is not None:
        config["cluster"] = cluster
    path.write_text(yaml.safe_dump(config))
    return path


def lowdose(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the real `lowdose` CLI in a subprocess; fail with its stderr when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", *args],
        cwd=REPO,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, (
        f"lowdose {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def assert_same_outputs(out: Path, reference: Path) -> None:
    """Denoised frames and both Parquet tables of two runs are identical."""
    from lowdose.parallel.outputs import open_denoised, read_table

    got, ref = open_denoised(out / "denoised.zarr"), open_denoised(reference / "denoised.zarr")
    np.testing.assert_array_equal(got["denoised"].values, ref["denoised"].values)
    np.testing.assert_array_equal(got["time_s"].values, ref["time_s"].values)
    for table in ("columns.parquet", "frames.parquet"):
        pd.testing.assert_frame_equal(read_table(out / table), read_table(reference / table))
    assert read_table(out / "frames.parquet")["frame"].tolist() == list(range(N_FRAMES))


@pytest.fixture(scope="session")
def local_reference(deploy_inputs, tmp_path_factory) -> Path:
    """`lowdose run` on an in-process LocalCluster: the outputs every deployment must reproduce."""
    series, model = deploy_inputs
    root = tmp_path_factory.mktemp("reference")
    cluster = {"name": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False}
    lowdose("run", str(pipeline_yaml(root / "p.yaml", series, root / "out", model, cluster)), "--quiet")
    return root / "out"


@contextlib.contextmanager
def start_dask_processes(env: dict[str, str] | None = None, n_workers: int = 2) -> Iterator[str]:
    """A real `dask scheduler` and ``n_workers`` `dask worker` processes on 127.0.0.1; yields the address."""
    from distributed import Client

    dask_cli = shutil.which("dask", path=str(BIN)) or str(BIN / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = env or child_env()
    scheduler = [
        dask_cli,
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        ":0",
    ]
    procs = [
        subprocess.Popen(
            scheduler, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    ]
    try:
        for i in range(n_workers):
            worker = [
                dask_cli,
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--memory-limit",
                "2GB",
                "--no-dashboard",
                "--name",
                f"w{i}",
                "--death-timeout",
                "60",
            ]
            procs.append(
                subprocess.Popen(
                    worker,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def dask_processes() -> Iterator[str]:
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1; yields the address."""
    with start_dask_processes() as address:
        yield address
