"""Run the ``lowdose`` console entry point in the test's own process.

For tests of what a command prints and its exit code: ``lowdose.cli.main`` is what the
console script calls (one-line errors, exit 2), without a fresh interpreter importing
torch again (≈ 3.5 CPU-s each on the test machine).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Ran:
    """Exit code and the text a command wrote."""

    returncode: int
    stdout: str
    stderr: str


def lowdose_main(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``lowdose ARGS...`` through :func:`lowdose.cli.main`, capturing its output."""
    from lowdose.cli import main

    capsys.readouterr()  # drop what the test printed before
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)
