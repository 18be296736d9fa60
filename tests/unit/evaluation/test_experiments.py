"""table1 / surface / likelihood: pure helpers, dispatcher, task cache, and runs on a tiny set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lowdose.cli.evaluate import parse_option
from lowdose.errors import LowdoseInputError
from lowdose.evaluation import EXPERIMENTS, experiment_module, inputs, likelihood, report, surface, table1
from lowdose.evaluation.runner import TaskResult, parts_dir, run_tasks
from tests.unit.evaluation.column_set import write_column_set


@pytest.fixture(scope="module")
def column_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_column_set(tmp_path_factory.mktemp("sim") / "set.zarr", n_structures=10, defoci=2, size=192)


def test_option_values_are_yaml_scalars() -> None:
    assert parse_option("crop=512") == ("crop", 512)
    assert parse_option("methods=raw,model") == ("methods", "raw,model")
    assert parse_option("seed=0") == ("seed", 0)
    assert parse_option("selection={model_id: {min: 0, max: 3}}") == (
        "selection",
        {"model_id": {"min": 0, "max": 3}},
    )
    with pytest.raises(LowdoseInputError, match="KEY=VALUE"):
        parse_option("crop")


def test_dispatcher_knows_every_experiment_and_rejects_others() -> None:
    assert EXPERIMENTS == ("table1", "surface", "likelihood", "generalization", "filters")
    assert experiment_module("table1") is table1
    with pytest.raises(LowdoseInputError, match="unknown experiment 'tabel1'"):
        experiment_module("tabel1")


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(LowdoseInputError, match=r"--option cropp: unknown option.*'crop'"):
        inputs.experiment_options("table1", {"cropp": 3}, table1.DEFAULTS)
    with pytest.raises(LowdoseInputError, match="realisations: expected an integer"):
        inputs.experiment_options("table1", {"realisations": "two"}, table1.DEFAULTS)
    with pytest.raises(LowdoseInputError, match="split: expected one of"):
        inputs.experiment_options("surface", {"split": "held-out"}, {})


def test_crop_is_centred_on_the_particle_and_stays_inside() -> None:
    truth = pd.DataFrame(
        {
            "x_px": [10.0, 30.0, 90.0],
            "y_px": [20.0, 40.0, 5.0],
            "element": ["Pt", "Pt", "Ce"],
            "surface": [1, 0, 0],
        }
    )
    assert inputs.crop_box((100, 100), 40, truth) == (10, 50, 0, 40)  # Pt centre (20, 30), clamped at x = 0
    assert inputs.crop_box((100, 100), 200, truth) == (0, 100, 0, 100)
    inside = inputs.crop_truth(truth, (10, 50, 0, 40))
    assert inside[["x_px", "y_px"]].to_numpy().tolist() == [[10.0, 10.0], [30.0, 30.0]]


def test_best_sigma_and_summary_statistics() -> None:
    rows = pd.DataFrame(
        {
            "method": ["a", "a", "b"],
            "psnr_db": [30.0, 32.0, 10.0],
            "ssim": [0.5, 0.7, 0.1],
            "seconds": [1.0, 3.0, 0.5],
        }
    )
    summary = table1.summarise(rows, ["a", "b", "c"]).set_index("method")
    assert summary.loc["a", "psnr_mean_db"] == 31.0
    assert summary.loc["a", "psnr_std_db"] == 1.0  # population std over images × realisations
    assert summary.loc["a", "n"] == 2 and summary.loc["c", "n"] == 0
    assert np.isnan(summary.loc["c", "psnr_mean_db"])
    tuning = pd.DataFrame({"sigma_px": [4.0, 4.0, 8.0, 8.0], "psnr_db": [30.0, 31.0, 30.8, 30.9]})
    assert table1.best_sigma(tuning) == 8.0


def test_llr_side_fractions_and_letter_values() -> None:
    fractions = likelihood.side_fractions([0.005, 0.02, -0.006, -0.1, 0.0, np.nan])
    assert fractions == pytest.approx({"above_real": 0.4, "between": 0.2, "below_spurious": 0.4})
    assert np.isnan(likelihood.side_fractions([])["between"])
    pairs = likelihood.letter_values(np.arange(1001), min_tail=5)
    assert pairs[0] == pytest.approx((250.0, 750.0))
    lows = [lo for lo, _ in pairs]
    assert lows == sorted(lows, reverse=True) and 1001 * 2.0 ** -(len(pairs) + 1) >= 5


def test_report_command_quotes_yaml_values() -> None:
    line = report.command_line("table1", Path("s.zarr"), Path("r"), "m", {"crop": 256, "images": [1, 2]})
    assert line == (
        "lowdose evaluate table1 --data s.zarr --out r --model m --option crop=256 --option 'images=[1, 2]'"
    )
    assert parse_option("images=[1, 2]") == ("images", [1, 2])


def test_markdown_table_escapes_pipes() -> None:
    text = report.markdown_table(pd.DataFrame({"a": ["x|y"], "b": [float("nan")]}))
    assert text.splitlines()[2] == "| x\\|y | – |"


_CALLS: list[int] = []


def _square(value: int) -> TaskResult:
    _CALLS.append(value)
    return TaskResult(rows=[{"value": value, "square": value * value}], arrays={"v": np.array([value])})


def test_run_tasks_resumes_from_parts_and_keys_them_by_options(tmp_path: Path) -> None:
    folder = parts_dir(tmp_path, "demo", {"a": 1})
    tasks = [(f"t{i}", {"value": i}) for i in range(3)]
    _CALLS.clear()
    first = run_tasks(_square, tasks[:2], folder, client=None, progress=False, label="demo")
    again = run_tasks(_square, tasks, folder, client=None, progress=False, label="demo")
    assert _CALLS == [0, 1, 2]  # only the missing task ran the second time
    assert [r.rows[0]["square"] for r in again.values()] == [0, 1, 4]
    assert first["t1"].arrays["v"].tolist() == again["t1"].arrays["v"].tolist() == [1]
    assert parts_dir(tmp_path, "demo", {"a": 2}) != folder


def test_split_defaults_to_the_models_training_split(column_set: Path) -> None:
    card = {
        "training": {
            "config": {"data": "somewhere/set.zarr", "selection": {"model_id": {"min": 0, "max": 4}}}
        }
    }
    images = inputs.resolve_images(column_set, inputs.experiment_options("t", {}, {}), card)
    assert images.split_source.startswith("the structure split recorded in the model's card")
    assert set(images.images // 2) <= {0, 1, 2, 3, 4}
    other = inputs.resolve_images(column_set, inputs.experiment_options("t", {"split_seed": 3}, {}), card)
    assert "seed 3" in other.split_source
    some = [int(i) for i in images.images[::2]]
    picked = inputs.resolve_images(column_set, inputs.experiment_options("t", {"images": some}, {}), card)
    assert picked.images.tolist() == some
    with pytest.raises(LowdoseInputError, match=r"images: image\(s\) \[19\] are not in the test split"):
        inputs.resolve_images(column_set, inputs.experiment_options("t", {"images": [19]}, {}), card)
    with pytest.raises(LowdoseInputError, match=r"selection \{'model_id': 99\} matches none of the 20"):
        inputs.resolve_images(
            column_set, inputs.experiment_options("t", {"selection": {"model_id": 99}}, {}), card
        )
    with pytest.raises(LowdoseInputError, match="the test split is empty"):
        inputs.resolve_images(
            column_set, inputs.experiment_options("t", {"split_fractions": "1,0,0"}, {}), card
        )


def test_noise_matches_the_training_evaluation_stream(column_set: Path) -> None:
    from lowdose.training.evaluate import noisy_pairs

    _, reference, clean_ref = list(noisy_pairs(str(column_set), [3], 1.0, 2, 7))[1]
    noisy, clean = inputs.noisy_clean(column_set, 3, 1, 1.0, 7)
    assert np.array_equal(noisy, reference) and np.array_equal(clean, clean_ref)


@pytest.mark.slow
def test_surface_runs_and_a_perfect_denoiser_scores_one(column_set: Path, tmp_path: Path) -> None:
    md = surface.run(
        column_set,
        tmp_path,
        model=None,
        client=None,
        options={"split": "all", "n_images": 3, "realisations": 1},
        progress=False,
    )
    assert md == tmp_path / "surface.md" and (tmp_path / "surface.png").stat().st_size > 10_000
    rows = pd.read_csv(tmp_path / "surface_rows.csv")
    assert len(rows) == 3 * 2  # images × methods (model, clean)
    clean = rows[rows["method"] == "clean"]
    assert (clean["surface_f1"] == 1.0).all() and (clean["bulk_f1"] == 1.0).all()
    summary = pd.read_csv(tmp_path / "surface.csv")
    assert set(summary["metric"]) == {"precision", "recall", "f1", "jaccard"}
    assert "| clean image (perfect denoiser) | surface | 1.00 [1.00–1.00]" in md.read_text()


@pytest.mark.slow
def test_likelihood_runs_and_separates_real_from_spurious(column_set: Path, tmp_path: Path) -> None:
    md = likelihood.run(
        column_set,
        tmp_path,
        model=None,
        client=None,
        options={"split": "all", "n_images": 2, "realisations": 1, "methods": "clean"},
        progress=False,
    )
    summary = pd.read_csv(tmp_path / "likelihood.csv").set_index("truth")
    columns = pd.read_csv(tmp_path / "likelihood_columns.csv")
    assert summary.loc["real", "n"] == columns["matched"].sum() > 40  # 27 true columns per image
    assert summary.loc["real", "above_real"] > 0.9
    text = md.read_text()
    assert "≥ 0.005" in text and "≤ -0.006" in text and (tmp_path / "likelihood.png").exists()


def test_column_experiments_need_ground_truth(tmp_path: Path) -> None:
    from tests.unit.training.synthetic_store import write_synthetic_set

    store = write_synthetic_set(tmp_path / "plain.zarr", n_structures=3, defoci=1, size=32)
    with pytest.raises(LowdoseInputError, match="no ground-truth columns"):
        surface.run(store, tmp_path / "r", model=None, client=None, options={"split": "all"}, progress=False)
