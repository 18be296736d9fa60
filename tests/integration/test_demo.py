import subprocess
import sys
from pathlib import Path

import pytest

from lowdose.models.artefact import DEFAULT_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not any(DEFAULT_DIR.glob("*.safetensors")), reason="no shipped default model"),
]


def lowdose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, timeout=900, cwd=cwd
    )


def test_demo_end_to_end_then_reuses_its_work(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    first = lowdose(
        "demo", "--no-serve", "--frames", "48", "--workdir", str(work), "--workers", "2", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]
    for text in ("surface-column F1", "column verdicts", "pipeline throughput", "dashboard"):
        assert text in first.stdout
    listed = lowdose("catalog", "list", "--catalog", str(work / "catalog.yaml"), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("series", "run.denoised", "run.columns", "run.frames", "default_model"):
        assert name in listed.stdout
    again = lowdose(
        "demo", "--no-serve", "--frames", "48", "--workdir", str(work), "--workers", "2", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "surface-column F1" in again.stdout
