"""Fixtures of the fault-injection suite: the per-test fault recorder and the real CLI in subprocesses.

Every test here injects real faults (SIGKILL, a file-size limit, flipped bytes) into
real runs and then judges the outcome. It records each fault with
``faults.inject(kind, detail)`` and the verdict with ``faults.judge(record, ...)``;
the session tally and the ``faults: N injected, N survived, 0 lost`` line come from
``tests/faults/ledger.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.ledger import FaultRecord, ledger_of

REPO = Path(__file__).resolve().parents[2]


class FaultRecorder:
    """What one test injected and how its runs came out."""

    def __init__(self, config: pytest.Config, test: str) -> None:
        self.ledger = ledger_of(config)
        self.test = test

    def inject(self, kind: str, detail: str) -> FaultRecord:
        """Record a fault that was actually delivered (call only after it landed)."""
        return self.ledger.inject(self.test, kind, detail)

    def not_injected(self, kind: str, reason: str) -> None:
        """Record a fault the suite deliberately does not inject, and why (printed in the summary)."""
        self.ledger.not_injected[kind] = reason

    def judge(
        self,
        record: FaultRecord,
        *,
        frames_lost: int = 0,
        frames_duplicated: int = 0,
        intact: bool = True,
    ) -> None:
        """Set the verdict: survived only if nothing was lost, duplicated or changed."""
        record.frames_lost = int(frames_lost)
        record.frames_duplicated = int(frames_duplicated)
        ok = intact and frames_lost == 0 and frames_duplicated == 0
        record.outcome = "survived" if ok else "lost"


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> FaultRecorder:
    return FaultRecorder(request.config, request.node.nodeid)


def lowdose_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a ``lowdose`` subprocess: one BLAS/torch thread, no colour."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NO_COLOR": "1", **(extra or {})}


def lowdose_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "lowdose", *args]


def run_lowdose(
    args: Sequence[str], *, timeout: float = 240, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lowdose ARGS`` to the end and return it (no check)."""
    return subprocess.run(
        lowdose_argv(*args),
        cwd=REPO,
        env=lowdose_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
        check=False,
    )


def run_ok(args: Sequence[str], *, timeout: float = 240) -> float:
    """Run ``lowdose ARGS``, assert exit 0, return the wall time in seconds."""
    started = time.perf_counter()
    proc = run_lowdose(args, timeout=timeout)
    assert proc.returncode == 0, f"lowdose {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return time.perf_counter() - started


@dataclass
class KillResult:
    """A SIGKILL aimed at a running ``lowdose`` process."""

    landed: bool  # the process was still running when the signal was sent
    after_s: float  # seconds after start


def kill_when(
    args: Sequence[str], reached: Callable[[], bool], delay_s: float = 0.0, *, timeout: float = 240
) -> KillResult:
    """Start ``lowdose ARGS`` in its own process group; SIGKILL the group ``delay_s`` after ``reached()``.

    ``reached`` looks at the run's outputs (committed frames, chunk markers, log
    lines), so the kill lands at a chosen point of the work rather than during
    imports; ``delay_s`` moves it off the instant a commit happened. ``landed`` is
    False when the run finished first (then nothing was injected).
    """
    proc = subprocess.Popen(
        lowdose_argv(*args),
        cwd=REPO,
        env=lowdose_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the kill takes Dask workers and loader threads with it
    )
    started = time.perf_counter()
    try:
        while proc.poll() is None and not reached() and time.perf_counter() - started < timeout:
            time.sleep(0.002)
        aim = time.perf_counter() + delay_s
        while proc.poll() is None and time.perf_counter() < aim:
            time.sleep(0.001)
        landed = proc.poll() is None
        elapsed = time.perf_counter() - started
        if landed:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if not landed:
        assert proc.returncode == 0, f"lowdose {' '.join(args)} failed before the kill:\n{err[-3000:]!r}"
    return KillResult(landed=landed, after_s=elapsed)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (the byte-identity check)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def duplicates_and_missing(found: Sequence[int], expected: Sequence[int]) -> tuple[int, int]:
    """(lost, duplicated) of a list of frame/step indices against the expected ones."""
    seen = list(found)
    lost = len(set(expected) - set(seen))
    duplicated = len(seen) - len(set(seen))
    return lost, duplicated
