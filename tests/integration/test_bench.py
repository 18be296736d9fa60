import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowdose.bench import STAGES, validate_report
from lowdose.models.artefact import DEFAULT_DIR

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not any(DEFAULT_DIR.glob("*.safetensors")), reason="no shipped default model")
def test_quick_bench_runs_every_stage_and_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    table = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", "bench", "--quick", "--out", str(out), "--markdown", str(table)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    validate_report(report)
    assert tuple(report["stages"]) == STAGES
    stages = report["stages"]
    denoise = stages["denoise"]
    assert denoise["roofline_conv3x3"]["gflop_per_s"] > 0
    assert denoise["models"]["default"]["128"]["flops"] > 0
    # FLOPs are counted from the models: the paper U-Net costs far more than the default.
    assert denoise["paper_unet_flops_per_1024_frame"] > 100 * denoise["models"]["default"]["128"]["flops"]
    assert stages["train"]["streaming_samples_per_s"]["median"] > 0
    assert stages["pipeline"]["split_s"]["denoise"] > 0 and stages["pipeline"]["split_s"]["analyse"] > 0
    assert stages["simulate"]["images"] == stages["simulate"]["bare"]["images"] > 0
    runs = stages["memory"]["runs"]
    assert [run["n_frames"] for run in runs.values()] == [32, 320]
    assert all(v > 0 for run in runs.values() for v in run["worker_peak_MB"].values())
    for stage in STAGES:
        assert f"bench {stage} ..." in proc.stdout
        assert all(isinstance(t["met"], bool) for t in stages[stage]["targets"])
    assert "TARGET" in proc.stdout
    assert "| stage | target |" in table.read_text()


def test_unknown_stage_is_a_user_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", "bench", "nope", "--out", str(tmp_path / "b.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown bench stage" in proc.stderr
