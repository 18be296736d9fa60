"""Fixtures shared by the integration tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lowdose.models.artefact import DEFAULT_DIR

DEMO_TEST_FRAMES = 48
"""Frames of the demo the tests run (two 32-frame chunks, so both workers get work)."""


def lowdose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``lowdose`` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, timeout=900, cwd=cwd
    )


@dataclass(frozen=True)
class DemoRun:
    """A finished ``lowdose demo --no-serve`` and its work folder."""

    workdir: Path
    first: subprocess.CompletedProcess[str]

    def again(self) -> subprocess.CompletedProcess[str]:
        """Run the same demo command once more (it should reuse the work folder)."""
        return lowdose(*demo_args(self.workdir), cwd=self.workdir.parent)


def demo_args(workdir: Path) -> list[str]:
    return [
        "demo",
        "--no-serve",
        "--frames",
        str(DEMO_TEST_FRAMES),
        "--workdir",
        str(workdir),
        "--workers",
        "2",
    ]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The real demo (command line, 48 frames of 512², 2 workers, no serving), run once per session."""
    if not any(DEFAULT_DIR.glob("*.safetensors")):
        pytest.skip("no shipped default model")
    root = tmp_path_factory.mktemp("demo")
    workdir = root / "lowdose-demo"
    return DemoRun(workdir, lowdose(*demo_args(workdir), cwd=root))
