"""``lowdose evaluate generalization``: cells, structure-disjoint splits, report, Dask, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.evaluation import generalization as G
from lowdose.models.artefact import save_artefact
from lowdose.models.registry import build
from lowdose.store.simulation_set import open_simulation_set
from tests.unit.evaluation.lattice_set import write_set
from tests.unit.training.synthetic_store import lattice_image

torch.set_num_threads(1)
TINY = {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8}
BUDGET = {
    "factors": "particle,contrast",
    "steps": 4,
    "patch_size": 32,
    "batch_size": 2,
    "validate_every": 2,
    "validation_patches": 2,
    "validation_patch_size": 32,
    "test_images": 2,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n_structures, defoci = 12, 2
    images = [lattice_image(rng, 64) for _ in range(n_structures * defoci)]
    coords = {
        "model_id": [s for s in range(n_structures) for _ in range(defoci)],
        "particle": [f"PtNp{1 + s % 2}" for s in range(n_structures) for _ in range(defoci)],
        "contrast": [c for _ in range(n_structures) for c in ("white", "black")],
        "defocus_nm": [4.0 * k for _ in range(n_structures) for k in range(defoci)],
    }
    return write_set(tmp_path_factory.mktemp("sim") / "set.zarr", images, coords)


@pytest.fixture(scope="module")
def architecture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_artefact(
        tmp_path_factory.mktemp("m") / "tiny", build("compact", **TINY), name="compact", model_config=TINY
    )


def test_plan_keeps_test_structures_out_of_training(store: Path, tmp_path: Path) -> None:
    ds = open_simulation_set(store)
    opts = G.parse_options(G.NAME, BUDGET, G.DEFAULTS)
    cells, skipped = G.plan(store, tmp_path, ds, {"name": "compact", "config": TINY}, opts)
    labels = [(c.factor, c.train_class) for c in cells]
    assert labels == [
        ("particle", "PtNp1"),
        ("particle", "PtNp2"),
        ("contrast", "black"),
        ("contrast", "white"),
        ("*", "all"),
        ("*", "gaussian"),
    ]
    assert skipped == []
    model_of = dict(zip(ds["image"].values.tolist(), ds["model_id"].values.tolist(), strict=True))
    train_ids = set(cells[0].config["selection"]["model_id"])  # type: ignore[index]
    for cell in cells:
        if cell.config is not None:
            assert set(cell.config["selection"]["model_id"]) == train_ids
        for classes in cell.tests.values():
            for images in classes.values():
                assert 1 <= len(images) <= 2
                assert not {model_of[i] for i in images} & train_ids
    assert cells[0].tests == {"particle": cells[-1].tests["particle"]}
    assert sorted(cells[-2].tests) == ["contrast", "particle"]
    # A class with a single training structure cannot be split into train/validation: skipped.
    one = min(train_ids)
    lonely = ds.assign_coords(particle=("image", np.where(ds["model_id"].values == one, "PtNp9", "PtNp1")))
    cells, skipped = G.plan(
        store, tmp_path, lonely, {"name": "compact", "config": TINY}, {**opts, "factors": ("particle",)}
    )
    assert skipped == ["particle=PtNp9: 1 training structure(s), too few for a train/validation split"]
    assert [c.train_class for c in cells] == ["PtNp1", "all", "gaussian"]


@pytest.mark.slow
def test_run_on_dask_then_resume_in_process(store: Path, architecture: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    out = tmp_path / "report"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            md = G.run(store, out, model=str(architecture), client=client, options=BUDGET, progress=False)
    table = pd.read_csv(out / "generalization.csv")
    # 2 particle cells × 2 test particles, 2 contrast cells × 2 test contrasts, and all/gaussian × 4 columns
    assert len(table) == 4 + 4 + 4 + 4
    assert set(table["train_class"]) == {"PtNp1", "PtNp2", "black", "white", "all", "gaussian"}
    assert table["psnr_db"].notna().all() and (table["psnr_db"] > table["raw_psnr_db"]).all()
    trained = table[table["train_class"] != "gaussian"]
    assert (trained["steps"] == 4).all() and (trained["train_images"] > 0).all()
    gaussian = table[table["train_class"] == "gaussian"]
    assert (
        gaussian["gaussian_sigma_px"].nunique() == 1
        and gaussian["gaussian_sigma_px"].iloc[0] in G.REFERENCE_SIGMAS_PX
    )
    # every cell has its artefact; the same noisy test images score identical raw PSNR in every row
    runs = sorted((out / "generalization_runs").iterdir())
    assert len(runs) == 6
    assert sum((run / "model" / "model.safetensors").exists() for run in runs) == 5
    assert table.groupby(["factor", "test_class"])["raw_psnr_db"].nunique().max() == 1
    text = md.read_text()
    assert (
        "**Budget per training run:** 4 Adam steps" in text
        and "## particle" in text
        and "## contrast" in text
    )
    assert (out / "generalization.png").stat().st_size > 10_000
    # Re-run without Dask: every cell is reused, nothing retrains, the table is identical.
    stamps = {run: (run / "scores.json").stat().st_mtime_ns for run in runs}
    G.run(store, out, model=str(architecture), client=None, options=BUDGET, progress=False)
    assert {run: (run / "scores.json").stat().st_mtime_ns for run in runs} == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out / "generalization.csv"), table)


def test_bad_options(store: Path, architecture: Path, tmp_path: Path) -> None:
    def go(options: dict[str, object]) -> None:
        G.run(store, tmp_path, model=str(architecture), client=None, options=options, progress=False)

    with pytest.raises(LowdoseInputError, match="unknown factor 'colour'"):
        go({"factors": "colour"})
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        go({"steps": "many"})
    with pytest.raises(LowdoseInputError, match="test_fraction"):
        go({"test_fraction": 1.5})
    with pytest.raises(ConfigError, match="include_all: expected true/false"):
        go({"include_all": "perhaps"})
