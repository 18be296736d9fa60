"""``lowdose evaluate filters``: pixel choice, exact homogeneity, report files, resume, Dask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.evaluation import filters
from lowdose.models.artefact import load_model, save_artefact
from lowdose.models.registry import build
from tests.unit.analysis.synthetic import particle_on_support
from tests.unit.evaluation.lattice_set import write_set

torch.set_num_threads(1)
TINY = {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8}
WINDOW = 121  # covers the tiny model's 104 px receptive field


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image, rows = particle_on_support(256)
    return write_set(
        tmp_path_factory.mktemp("sim") / "set.zarr", [image, image], {"model_id": [0, 1]}, [rows, rows]
    )


def _artefact(directory: Path, bias: bool) -> Path:
    torch.manual_seed(0)
    config = {**TINY, "bias": bias}
    model = build("compact", **config)
    if bias:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                    module.bias.fill_(0.05)
    return save_artefact(directory, model, name="compact", model_config=config)


@pytest.fixture(scope="module")
def bias_free(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _artefact(tmp_path_factory.mktemp("model") / "bias_free", bias=False)


def test_pixels_are_vacuum_surface_and_bulk() -> None:
    image, rows = particle_on_support(256)
    table = pd.DataFrame(rows)
    pixels = filters.choose_pixels(table, image.shape, margin_px=40)
    xy = table[["y_px", "x_px"]].to_numpy()
    vy, vx = pixels["vacuum"]
    # the farthest interior pixel from every column: ~35 px in this compact scene
    assert np.min(np.hypot(xy[:, 0] - vy, xy[:, 1] - vx)) > 30
    assert 40 <= vy <= 215 and 40 <= vx <= 215
    for kind, surface in (("surface", True), ("bulk", False)):
        y, x = pixels[kind]
        hit = table[(table["y_px"].round() == y) & (table["x_px"].round() == x)]
        assert len(hit) == 1 and hit["element"].item() == "Pt" and bool(hit["surface"].item()) is surface
    with pytest.raises(LowdoseInputError, match="bulk"):
        filters.choose_pixels(table[table["surface"] | (table["element"] != "Pt")], image.shape, 40)


@pytest.mark.parametrize(("y", "x"), [(70, 90), (128, 128), (200, 31)])
def test_bias_free_output_is_filter_dot_input(bias_free: Path, y: int, x: int) -> None:
    noisy = np.random.default_rng(y).poisson(0.45, (256, 256)).astype(np.float32)
    result = filters.jacobian_at(str(bias_free), noisy, y, x, WINDOW)
    model, _ = load_model(bias_free)
    with torch.no_grad():
        direct = float(model(torch.from_numpy(noisy)[None, None])[0, 0, y, x])
    assert direct != 0.0
    assert result["output"] == pytest.approx(direct, rel=1e-6)
    # The window holds the whole filter, so the windowed sum is the full Σ filter·input.
    half = WINDOW // 2
    padded = np.pad(noisy, half, constant_values=np.nan)
    window = padded[y : y + WINDOW, x : x + WINDOW]
    assert result["abs_mass_in_window"] == pytest.approx(1.0, abs=1e-6)
    assert float(np.nansum(result["filter_window"] * window)) == pytest.approx(direct, rel=1e-4, abs=1e-6)
    assert result["relative_difference"] < 1e-4


def test_model_with_biases_is_not_homogeneous(tmp_path: Path) -> None:
    biased = _artefact(tmp_path / "biased", bias=True)
    noisy = np.random.default_rng(0).poisson(0.45, (128, 128)).astype(np.float32)
    assert filters.jacobian_at(str(biased), noisy, 64, 64, 33)["relative_difference"] > 1e-2


@pytest.mark.slow
def test_run_writes_report_and_resumes(store: Path, bias_free: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    options = {"window_px": str(WINDOW), "image": "1"}
    md = filters.run(store, out, model=str(bias_free), client=None, options=options, progress=False)
    assert md == out / "filters.md"
    assert (out / "filters.png").stat().st_size > 10_000
    table = pd.read_csv(out / "filters.csv")
    assert table["kind"].tolist() == ["vacuum", "surface", "bulk"]
    assert (table["image"] == 1).all()
    assert (table["relative_difference"] < 1e-4).all()
    assert np.allclose(table["abs_mass_in_window"], 1.0)
    text = md.read_text()
    assert "![effective filters](filters.png)" in text and "--option image=1" in text
    cache = sorted((out / "filters_cache").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert len(cache) == 3
    filters.run(store, out, model=str(bias_free), client=None, options=options, progress=False)
    assert [p.stat().st_mtime_ns for p in cache] == stamps  # nothing recomputed
    pd.testing.assert_frame_equal(pd.read_csv(out / "filters.csv"), table)


@pytest.mark.slow
def test_dask_tasks_give_the_same_filters(store: Path, bias_free: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    options = {"window_px": 65}
    local = filters.run(
        store, tmp_path / "a", model=str(bias_free), client=None, options=options, progress=False
    )
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            filters.run(
                store, tmp_path / "b", model=str(bias_free), client=client, options=options, progress=False
            )
    a = pd.read_csv(local.with_suffix(".csv"))
    b = pd.read_csv(tmp_path / "b" / "filters.csv")
    pd.testing.assert_frame_equal(a, b)
    # the default image is the first held-out white-contrast one
    assert a["image"].nunique() == 1


def test_bad_options(store: Path, bias_free: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        filters.run(store, tmp_path, model=str(bias_free), client=None, options={"windw": 3}, progress=False)
    with pytest.raises(ConfigError, match="integer"):
        filters.run(
            store, tmp_path, model=str(bias_free), client=None, options={"image": "x"}, progress=False
        )
    with pytest.raises(LowdoseInputError, match="not a finished image"):
        filters.run(store, tmp_path, model=str(bias_free), client=None, options={"image": 9}, progress=False)


def test_default_image_is_one_the_model_never_saw(store: Path) -> None:
    from lowdose.store.simulation_set import open_simulation_set, read_ground_truth

    ds = open_simulation_set(store)
    trained = {"data": "elsewhere/set.zarr", "selection": {}, "split_fractions": [0.5, 0.0, 0.5]}
    # split seed 0 deals structure 0 to training and structure 1 to test: image 1 is held out
    images, source = filters.held_out_images(store, ds, {"training": {"config": trained}})
    assert images.tolist() == [1] and source.startswith("the model's own test split")
    assert filters.default_image(ds, read_ground_truth(store), images) == 1
    other = {"training": {"config": {**trained, "data": "other.zarr"}}}
    images, source = filters.held_out_images(store, ds, other)
    # two structures are too few for a (0.8, 0.1, 0.1) split: every image is a candidate
    assert source.startswith("all images") and images.tolist() == [0, 1]
    assert filters.held_out_images(store, ds, {})[1].startswith("all images")
