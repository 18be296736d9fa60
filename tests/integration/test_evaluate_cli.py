"""``lowdose evaluate table1`` end to end: a real LocalCluster, a tiny SimulationSet, report files, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowdose.evaluation.table1 import CLASSICAL, LEARNED
from tests.unit.evaluation.column_set import write_column_set


def _lowdose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def dncnn_artefact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from lowdose.models.artefact import save_artefact
    from lowdose.models.registry import build

    torch.manual_seed(0)
    config = {"depth": 3, "channels": 4}
    return save_artefact(
        tmp_path_factory.mktemp("dncnn") / "artefact",
        build("dncnn", **config),
        name="dncnn",
        model_config=config,
    )


@pytest.mark.slow
def test_table1_cli_writes_report_and_resumes(tmp_path: Path, dncnn_artefact: Path) -> None:
    store = write_column_set(tmp_path / "set.zarr", n_structures=10, defoci=2, size=224)
    out = tmp_path / "report"
    args = (
        "evaluate", "table1", "--data", str(store), "--out", str(out),
        "--cluster", "local", "--n-workers", "1", "--threads-per-worker", "1", "--quiet",
        "--option", "crop=128", "--option", f"dncnn={dncnn_artefact}", "--option", "sigmas=2,4,8",
    )  # fmt: skip
    proc = _lowdose(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("table1.md")
    for name in ("table1.md", "table1.csv", "table1.png", "table1_rows.csv", "table1_gaussian_tuning.csv"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "table1.csv").set_index("method")
    assert list(table.index) == [*CLASSICAL, "dncnn", "model", "small_unet", "blindspot", "unet"]
    measured = table[table["status"] == "measured"]
    assert np.isfinite(measured["psnr_mean_db"]).all() and np.isfinite(measured["ssim_mean"]).all()
    assert (measured["n"] == 2).all()  # the test split: 1 structure × 2 defoci, 1 realisation
    for name in ("small_unet", "blindspot", "unet"):
        assert table.loc[name, "status"].startswith("not trained") and np.isnan(
            table.loc[name, "psnr_mean_db"]
        )
    # Poisson noise has variance = mean, so the unclipped raw image scores −10·log10(mean clean)
    from lowdose.evaluation.inputs import crop_box, ground_truth_by_image, noisy_clean

    truths = ground_truth_by_image(store, [2, 3])
    expected = []
    for image in (2, 3):
        _, clean = noisy_clean(store, image, 0, 1.0, 0)
        y0, y1, x0, x1 = crop_box(clean.shape, 128, truths[image])
        expected.append(-10 * np.log10(clean[y0:y1, x0:x1].mean()))
    assert table.loc["raw", "psnr_mean_db"] == pytest.approx(np.mean(expected), abs=0.15)
    # every classical baseline and the model beat the raw image (an untrained DnCNN need not)
    better = measured.drop(index=["raw", "dncnn"])["psnr_mean_db"]
    assert (better > table.loc["raw", "psnr_mean_db"] + 2).all(), better
    markdown = (out / "table1.md").read_text()
    assert "128×128 crop" in markdown and "![Fig. 4-style panel](table1.png)" in markdown
    assert markdown.count("not trained") >= len(LEARNED) - 1

    parts = sorted((out / "table1.parts").glob("*/img_*.json"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    before = pd.read_csv(out / "table1.csv")
    again = _lowdose(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # every task reused, none recomputed
    pd.testing.assert_frame_equal(pd.read_csv(out / "table1.csv"), before)


def test_unknown_experiment_is_a_one_line_error(tmp_path: Path) -> None:
    proc = _lowdose("evaluate", "tabel1", "--data", str(tmp_path), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lowdose: error: lowdose evaluate: unknown experiment 'tabel1'; "
        "expected one of ['table1', 'surface', 'likelihood', 'generalization', 'filters']"
    ]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_column_set(tmp_path_factory.mktemp("set") / "set.zarr", n_structures=4, defoci=1, size=64)


@pytest.mark.parametrize(
    ("experiment", "flags", "named"),
    [
        ("table1", ["--option", "bogus=1"], "--option bogus: unknown option"),
        ("table1", ["--option", "methods=raw,nope"], "methods: unknown ['nope']"),
        ("table1", ["--option", "dncnn=no/such/artefact"], "no/such/artefact: no such model"),
        ("surface", ["--option", "methods=model,foo"], "--option methods"),
        ("likelihood", ["--option", "realisations=0"], "--option realisations: expected >= 1"),
        ("filters", ["--option", "window_px=2"], "--option window_px: expected at least 8"),
        ("generalization", ["--option", "test_fraction=2"], "--option test_fraction"),
        ("table1", ["--model", "no-such-model"], "--model no-such-model: no such model"),
    ],
)
def test_bad_options_and_model_fail_before_a_cluster_starts(
    small_set: Path, tmp_path: Path, experiment: str, flags: list[str], named: str
) -> None:
    from typer.testing import CliRunner

    from lowdose.cli import app
    from lowdose.errors import LowdoseInputError

    out = tmp_path / "report"
    args = ["evaluate", experiment, "--data", str(small_set), "--out", str(out), "--n-workers", "1", *flags]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, LowdoseInputError), result.output
    assert named in str(result.exception)
    assert "dashboard" not in result.output and "Dask" not in result.output  # no cluster was started
    assert not out.exists()


def test_data_that_is_not_a_simulation_set_fails_before_a_cluster_starts(tmp_path: Path) -> None:
    not_a_set = tmp_path / "frames.zarr"
    not_a_set.mkdir()
    (not_a_set / "readme.txt").write_text("not zarr")
    proc = _lowdose("evaluate", "table1", "--data", str(not_a_set), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"lowdose: error: {not_a_set}: not a readable zarr store (GroupNotFoundError)"
    ]
    assert "dashboard" not in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_bad_option_returns_within_seconds_without_cluster_output(small_set: Path, tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    proc = _lowdose(
        "evaluate", "table1", "--data", str(small_set), "--out", str(tmp_path / "r"),
        "--cluster", "local", "--n-workers", "1", "--option", "cropp=128",
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowdose: error: lowdose evaluate table1 --option cropp:")
    assert proc.stdout == ""  # a started cluster prints "Dask local cluster ready; dashboard: ..."
    # ~1 s here (interpreter + imports); starting the LocalCluster first took ~3.7 s more
    assert elapsed < 15, f"{elapsed:.1f} s"
