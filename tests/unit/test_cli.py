import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.inprocess import Ran, lowdose_main

REPO = Path(__file__).resolve().parents[2]
LOWDOSE = [sys.executable, "-m", "lowdose"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOWDOSE, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "version" in out.stdout and "config" in out.stdout


def test_version_prints_key_packages() -> None:
    out = run("version")
    assert out.returncode == 0, out.stderr
    for name in ("lowdose", "torch", "zarr", "dask", "xarray"):
        assert name in out.stdout


def test_invalid_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnot_a_field: 3\n")
    out = run("config", "validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "not_a_field" in lines[0] and "bad.yaml" in lines[0]


@pytest.mark.parametrize("cwd", [REPO, REPO / "platform"])
def test_stdlib_platform_not_shadowed(cwd: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_validate_without_kind_says_which_kind_it_checked(tmp_path: Path) -> None:
    # A good pipeline config checked without --kind: every key is "unknown" to the base kind.
    config = tmp_path / "pipeline.yaml"
    config.write_text("series: s.zarr\nout: run\n")
    out = run("config", "validate", str(config))
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "pipeline.yaml" in lines[0] and "checked as kind 'base'" in lines[0] and "--kind" in lines[0]
    ok = run("config", "validate", str(config), "--kind", "pipeline")
    assert ok.returncode == 0, ok.stderr
    assert "series: s.zarr" in ok.stdout


def test_validate_train_builds_the_model_and_checks_init_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Model options and init_weights were only checked by `lowdose train`; validate checks them too.
    def run(*args: str) -> Ran:  # in this process: each fresh interpreter would import torch again
        return lowdose_main(capsys, *args)

    base = "version: 1\ndata: d.zarr\nmodel: compact\nmodel_options: {base_channels: 8, max_channels: 16}\n"
    config = tmp_path / "train.yaml"
    config.write_text(base + "init_weights: default\n")
    narrow = run("config", "validate", str(config), "--kind", "train")
    # The shipped default (16/64 wide) cannot start a narrower network.
    assert narrow.returncode == 2
    assert "init_weights 'default'" in narrow.stderr and "narrower" in narrow.stderr
    config.write_text(base.replace("max_channels: 16", "max_channels: 16, widht: 3"))
    typo = run("config", "validate", str(config), "--kind", "train")
    assert typo.returncode == 2 and "widht" in typo.stderr and "Traceback" not in typo.stderr
    config.write_text(base + f"init_weights: {tmp_path / 'nowhere'}\n")
    missing = run("config", "validate", str(config), "--kind", "train")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"lowdose: error: init_weights: {tmp_path / 'nowhere'}: no such model "
        "(expected 'default' or an artefact directory)"
    )
    config.write_text(base)
    good = run("config", "validate", str(config), "--kind", "train")
    assert good.returncode == 0, good.stderr
    assert "base_channels: 8" in good.stdout


def test_align_errors_name_the_series_and_the_flag(tmp_path: Path) -> None:
    import numpy as np

    from lowdose.store.series import append_frames, create_frame_series

    series = tmp_path / "short.zarr"
    create_frame_series(series, (16, 16))
    append_frames(series, np.zeros((24, 16, 16), dtype="uint8"))
    short = run("align", str(series), "--block-frames", "40")
    assert short.returncode == 2
    assert (
        short.stderr.strip() == f"lowdose: error: {series}: series has 24 frames, fewer than one block of 40"
    )
    small = run("align", str(series), "--block-frames", "10")
    assert small.returncode == 2
    assert small.stderr.strip().startswith(f"lowdose: error: {series}: --block-frames 10: expected ≥ 20")


@pytest.mark.parametrize("command", [["catalog", "list"], ["dashboard", "--port", "0"]])
def test_default_catalog_missing_says_how_to_name_one(tmp_path: Path, command: list[str]) -> None:
    # run outside the repository with neither --catalog nor LOWDOSE_CATALOG
    env = {k: v for k, v in os.environ.items() if k not in ("LOWDOSE_CATALOG", "LOWDOSE_CATALOG_ROOT")}
    out = subprocess.run(
        [*LOWDOSE, *command], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "catalogs/demo.yaml: catalog file not found" in lines[0]
    assert "--catalog FILE" in lines[0] and "LOWDOSE_CATALOG" in lines[0]


@pytest.mark.parametrize("flag", ["--chunk-frames", "--batch-frames"])
def test_ingest_refuses_a_non_positive_frame_count(tmp_path: Path, flag: str) -> None:
    import numpy as np

    source = tmp_path / "frames.npy"
    np.save(source, np.ones((4, 8, 8), dtype="uint8"))
    args = ["--pixel-size-A", "0.061", "--frame-rate-hz", "40", "--quiet", flag, "-1"]
    out = run("ingest", str(source), "--out", str(tmp_path / "s.zarr"), *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert flag in out.stderr and "greater than or equal to" in out.stderr
    assert not (tmp_path / "s.zarr").exists()
