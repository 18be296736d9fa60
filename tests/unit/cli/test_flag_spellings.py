"""Both spellings of the worker count (``--workers``/``--n-workers``) and of ``--quiet``/``--no-progress``.

Each command names its own spelling first (so ``--help`` and older scripts are
unchanged) and accepts the other as an alias of the same option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from lowdose.cli import app
from lowdose.errors import LowdoseInputError

WORKER_SPELLINGS = {"--workers", "--n-workers"}
COMMANDS_WITH_WORKERS = {
    "run",
    "denoise",
    "analyze",
    "evaluate",
    "simulate",
    "demo",
    "train",
    "cluster up",
}


def _commands() -> dict[str, Any]:
    """Every leaf command by its full name (``cluster up``, ``train``...).

    Typer may vendor its own click, so groups are recognised by their ``commands``.
    """
    found: dict[str, Any] = {}

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = command

    walk(typer.main.get_command(app), "")
    return found


def _option(command: Any, spellings: set[str]) -> Any:
    hits = [p for p in command.params if set(p.opts) & spellings]
    assert len(hits) <= 1, f"{[p.name for p in hits]} share a spelling"
    return hits[0] if hits else None


def test_every_worker_count_takes_both_spellings() -> None:
    with_workers = set()
    for name, command in _commands().items():
        option = _option(command, WORKER_SPELLINGS)
        if option is None:
            continue
        with_workers.add(name)
        assert WORKER_SPELLINGS <= set(option.opts), f"lowdose {name}: {option.opts}"
    assert with_workers >= COMMANDS_WITH_WORKERS


def test_the_original_spelling_stays_first() -> None:
    commands = _commands()
    firsts = {name: _option(commands[name], WORKER_SPELLINGS).opts[0] for name in COMMANDS_WITH_WORKERS}
    assert {n for n, first in firsts.items() if first == "--workers"} == {"simulate", "demo", "train"}
    train_progress = _option(commands["train"], {"--no-progress"})
    assert train_progress is not None and train_progress.opts == ["--no-progress", "--quiet"]


def test_every_no_progress_flag_also_takes_quiet() -> None:
    for name, command in _commands().items():
        option = _option(command, {"--no-progress"})
        if option is not None:
            assert "--quiet" in option.opts, f"lowdose {name}: {option.opts}"


@pytest.mark.parametrize("flag", ["--workers", "--n-workers"])
def test_denoise_parses_either_worker_spelling(tmp_path: Path, flag: str) -> None:
    # The flag is parsed (no usage error, exit 2 from click) and the run stops at the missing series.
    missing = tmp_path / "missing.zarr"
    result = CliRunner().invoke(app, ["denoise", str(missing), "--out", str(tmp_path / "o"), flag, "2"])
    assert isinstance(result.exception, LowdoseInputError), result.output
    assert "missing.zarr" in str(result.exception)


@pytest.mark.parametrize("flags", [["--quiet"], ["--no-progress"], ["--n-workers", "2", "--quiet"]])
def test_train_parses_quiet_and_n_workers(tmp_path: Path, flags: list[str]) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("kind: train\nbogus_field: 1\n")
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "t"), *flags])
    assert isinstance(result.exception, LowdoseInputError), result.output
    assert "bogus_field" in str(result.exception)
