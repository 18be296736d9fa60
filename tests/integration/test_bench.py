import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowdose.bench import validate_report
from lowdose.models.artefact import DEFAULT_DIR

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not any(DEFAULT_DIR.glob("*.safetensors")), reason="no shipped default model")
def test_quick_bench_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", "bench", "denoise", "ingest", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    validate_report(report)
    assert set(report["stages"]) == {"denoise", "ingest"}
    denoise = report["stages"]["denoise"]
    assert denoise["roofline_conv3x3"]["gflop_per_s"] > 0
    assert denoise["models"]["default"]["128"]["flops_per_frame"] > 0
    assert report["stages"]["ingest"]
    assert "denoise:" in proc.stdout


def test_unknown_stage_is_a_user_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", "bench", "nope", "--out", str(tmp_path / "b.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown bench stage" in proc.stderr


def test_validate_report_rejects_malformed() -> None:
    with pytest.raises(ValueError):
        validate_report({"schema": 1, "stages": {"denoise": {}}, "machine": {}})
