"""``lowdose evaluate filters`` through the CLI, on a scheduler given by address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lowdose.cli import app, main
from lowdose.models.artefact import save_artefact
from lowdose.models.registry import build
from tests.unit.analysis.synthetic import particle_on_support
from tests.unit.evaluation.lattice_set import write_set

TINY = {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    image, rows = particle_on_support(256)
    store = write_set(root / "set.zarr", [image], {"model_id": [0]}, [rows])
    torch.manual_seed(0)
    model = save_artefact(root / "model", build("compact", **TINY), name="compact", model_config=TINY)
    return store, model


@pytest.mark.slow
def test_evaluate_filters_cli(inputs: tuple[Path, Path], scheduler: str, tmp_path: Path) -> None:
    store, model = inputs
    out = tmp_path / "report"
    args = ["evaluate", "filters", "--data", str(store), "--out", str(out), "--model", str(model)]
    result = CliRunner().invoke(
        app, [*args, "--scheduler", scheduler, "--quiet", "--option", "window_px=121"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("filters.md")
    assert {p.name for p in out.iterdir()} >= {"filters.md", "filters.csv", "filters.png"}
    table = pd.read_csv(out / "filters.csv")
    assert table["kind"].tolist() == ["vacuum", "surface", "bulk"]
    assert (table["relative_difference"] < 1e-4).all()


def test_evaluate_filters_bad_option_exits_2(
    inputs: tuple[Path, Path], scheduler: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, model = inputs
    args = ["evaluate", "filters", "--data", str(store), "--out", str(tmp_path), "--model", str(model)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--scheduler", scheduler, "--quiet", "--option", "window_px=tiny"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "window_px: expected an integer" in err[0]
