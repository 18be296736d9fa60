"""``lowdose train --out OUT``: an earlier run in OUT is never overwritten without ``--overwrite``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lowdose.cli import app
from lowdose.errors import LowdoseInputError

runner = CliRunner()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def bogus_config(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("kind: train\nbogus_field: 1\n")
    return path


def test_log_and_config_without_checkpoint_are_refused_without_suggesting_resume(
    tmp_path: Path, bogus_config: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1}\n')
    (out / "config.yaml").write_text("steps: 4\n")
    result = runner.invoke(app, ["train", str(bogus_config), "--out", str(out)])
    assert isinstance(result.exception, LowdoseInputError)
    message = str(result.exception)
    assert str(out) in message and "log.jsonl" in message and "--overwrite" in message
    assert "--resume" not in message  # nothing to resume from
    assert (out / "log.jsonl").read_text() == '{"step": 1}\n'


def test_an_empty_or_new_folder_is_fine(tmp_path: Path, bogus_config: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        result = runner.invoke(app, ["train", str(bogus_config), "--out", str(out)])
        # past the OUT check: the config is what stops it
        assert isinstance(result.exception, LowdoseInputError)
        assert "bogus_field" in str(result.exception)


def test_resume_with_overwrite_and_a_file_as_out_are_refused(tmp_path: Path, bogus_config: Path) -> None:
    result = runner.invoke(
        app, ["train", str(bogus_config), "--out", str(tmp_path), "--resume", "--overwrite"]
    )
    assert isinstance(result.exception, LowdoseInputError) and "--overwrite" in str(result.exception)
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = runner.invoke(app, ["train", str(bogus_config), "--out", str(afile)])
    assert isinstance(result.exception, LowdoseInputError) and "not a folder" in str(result.exception)


@pytest.mark.slow
def test_a_real_earlier_run_is_refused_then_overwritten_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.inprocess import Ran, lowdose_main
    from tests.unit.training.synthetic_store import write_synthetic_set

    monkeypatch.chdir(tmp_path)

    def _lowdose(*args: str, cwd: Path) -> Ran:  # the console entry point, in this process
        return lowdose_main(capsys, *args)

    store = write_synthetic_set(tmp_path / "set.zarr", n_structures=4, defoci=2, size=64)
    config = {
        "data": str(store),
        "split_fractions": [0.5, 0.25, 0.25],
        "model": "compact",
        "model_options": {"unshuffle": 2, "scales": 1, "base_channels": 4, "max_channels": 4},
        "patch_size": 32,
        "batch_size": 2,
        "steps": 4,
        "validate_every": 2,
        "validation_patches": 2,
        "validation_patch_size": 32,
        "checkpoint_every": 2,
        "torch_threads": 1,
        "loader_threads": 1,
        "prefetch": 1,
        "device": "cpu",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    first = _lowdose("train", str(path), "--out", str(out), "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    written = _tree(out)
    assert "checkpoint/state.json" in written and "log.jsonl" in written

    again = _lowdose("train", str(path), "--out", str(out), "--quiet", cwd=tmp_path)
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1, again.stderr
    assert lines[0].startswith(f"lowdose: error: --out {out}: holds an earlier training run")
    assert "--resume" in lines[0] and "--overwrite" in lines[0]
    assert _tree(out) == written  # nothing the first run wrote was touched

    (out / "notes.txt").write_text("mine")  # not a training file: --overwrite leaves it
    stale = out / "checkpoint" / "stale.bin"
    stale.write_bytes(b"from the earlier run")
    over = _lowdose("train", str(path), "--out", str(out), "--quiet", "--overwrite", cwd=tmp_path)
    assert over.returncode == 0, over.stderr[-2000:]
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "log.jsonl").read_text().splitlines()) == len(written["log.jsonl"].splitlines())
