"""Guards for fuzz tests: a hard time limit and a bound on traced memory."""

from __future__ import annotations

import signal
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


class Hang(BaseException):
    """Raised when a guarded block runs past its time limit (not an Exception: readers cannot swallow it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`Hang` after ``seconds`` (SIGALRM; an outer timer is re-armed)."""
    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining:
            left = outer_remaining - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yield a one-item list that holds the peak traced allocation (bytes) of the block on exit."""
    result = [0]
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield result
    finally:
        result[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
