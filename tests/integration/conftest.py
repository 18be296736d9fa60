"""Fixtures shared by the integration tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from lowdose.demo import FIGURE_NAME
from lowdose.models.artefact import DEFAULT_DIR

DEMO_TEST_FRAMES = 48
"""Frames of the demo the tests run (two 32-frame chunks, so both workers get work)."""


def lowdose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``lowdose`` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, timeout=900, cwd=cwd
    )


@dataclass(frozen=True)
class Ran:
    """What one command printed and returned."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class DemoRun:
    """``lowdose demo --no-serve`` run twice on one work folder (the second run reuses the first's work)."""

    workdir: Path
    first: Ran
    again: Ran
    figure_ns_after_first: int | None
    """Modification time of the demo's picture between the two runs (None: not written)."""


def _run_demo_twice(workdir: Path) -> DemoRun:
    frames = str(DEMO_TEST_FRAMES)
    args = ["demo", "--no-serve", "--frames", frames, "--workdir", str(workdir), "--workers", "2"]
    first = lowdose(*args, cwd=workdir.parent)
    figure = workdir / FIGURE_NAME
    drawn = figure.stat().st_mtime_ns if figure.exists() else None
    again = lowdose(*args, cwd=workdir.parent)
    keep = {"returncode", "stdout", "stderr"}
    return DemoRun(
        workdir,
        Ran(**{k: v for k, v in vars(first).items() if k in keep}),
        Ran(**{k: v for k, v in vars(again).items() if k in keep}),
        drawn,
    )


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The real demo (command line, 48 frames of 512², 2 workers, no serving), run once per test session.

    Under pytest-xdist the workers share it: the first to ask runs it, the others wait on
    a lock and read its record. Nothing writes to the work folder after the fixture.
    """
    if not any(DEFAULT_DIR.glob("*.safetensors")):
        pytest.skip("no shipped default model")
    if "PYTEST_XDIST_WORKER" not in os.environ:
        root = tmp_path_factory.mktemp("demo")
        return _run_demo_twice(root / "lowdose-demo")
    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, common to all workers
    record = shared / "demo-run.json"
    with _exclusive(shared / "demo-run.lock"):
        if not record.exists():
            (shared / "demo").mkdir(exist_ok=True)
            run = _run_demo_twice(shared / "demo" / "lowdose-demo")
            record.write_text(json.dumps({**asdict(run), "workdir": str(run.workdir)}))
    saved = json.loads(record.read_text())
    return DemoRun(
        Path(saved["workdir"]), Ran(**saved["first"]), Ran(**saved["again"]), saved["figure_ns_after_first"]
    )
