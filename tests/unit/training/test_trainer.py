"""Trainer: exact resume, checkpoints without pickles, log, early stopping, config kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lowdose.config import config_class, load_config
from lowdose.errors import ConfigError, LowdoseInputError
from lowdose.training.config import TrainingConfig
from lowdose.training.trainer import train
from tests.unit.training.synthetic_store import write_synthetic_set


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_set(tmp_path_factory.mktemp("sim") / "set.zarr", n_structures=6, defoci=2, size=64)


def _config(store: Path, **overrides: object) -> TrainingConfig:
    base: dict[str, object] = {
        "data": str(store),
        "split_fractions": (0.5, 0.25, 0.25),
        "model": "compact",
        "model_options": {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8},
        "patch_size": 32,
        "batch_size": 2,
        "steps": 6,
        "validate_every": 2,
        "validation_patches": 2,
        "validation_patch_size": 32,
        "checkpoint_every": 3,
        "torch_threads": 1,
        "loader_threads": 1,
        "prefetch": 2,
    }
    base.update(overrides)
    return TrainingConfig.model_validate(base)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_resume_continues_exactly(store: Path, tmp_path: Path) -> None:
    whole = train(_config(store), tmp_path / "whole", progress=False, write_artefact=False)
    assert whole.steps == 6
    first = train(_config(store, steps=3), tmp_path / "split", progress=False, write_artefact=False)
    assert first.steps == 3
    resumed = train(_config(store), tmp_path / "split", resume=True, progress=False, write_artefact=False)
    assert resumed.steps == 6
    assert _losses(tmp_path / "split") == _losses(tmp_path / "whole")
    assert resumed.final_state_sha256 == whole.final_state_sha256
    assert resumed.best_validation_psnr_db == whole.best_validation_psnr_db
    # Checkpoints are safetensors + JSON, never pickles.
    files = sorted(p.name for p in (tmp_path / "whole" / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert load_file(str(tmp_path / "whole" / "checkpoint" / "optimizer.safetensors"))
    records = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all("val_psnr_db" in r for r in records if r["step"] % 2 == 0)


def test_training_reduces_the_loss_and_writes_an_artefact(store: Path, tmp_path: Path) -> None:
    config = _config(store, steps=16, validate_every=8, checkpoint_every=16, learning_rate=1e-2)
    result = train(config, tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    assert sum(losses[-4:]) < 0.75 * sum(losses[:4])
    assert result.artefact is not None
    card = (result.artefact / "model.yaml").read_text()
    assert "dataset_sha256" in card and "flops_per_1024_frame" in card


def test_early_stopping_stops(store: Path, tmp_path: Path) -> None:
    config = _config(store, steps=40, validate_every=1, early_stopping_patience=1, learning_rate=1e-9)
    result = train(config, tmp_path / "stop", progress=False, write_artefact=False)
    assert result.stopped_early and result.steps < 40


def test_resume_without_checkpoint_is_a_clear_error(store: Path, tmp_path: Path) -> None:
    with pytest.raises(LowdoseInputError, match="no checkpoint"):
        train(_config(store), tmp_path / "empty", resume=True, progress=False)


def test_config_kind_and_strictness(tmp_path: Path) -> None:
    assert config_class("train") is TrainingConfig
    path = tmp_path / "bad.yaml"
    path.write_text("data: x.zarr\nbatch_sise: 3\n")
    with pytest.raises(ConfigError, match="batch_sise"):
        load_config(TrainingConfig, path)


@pytest.mark.parametrize("name", ["train-default", "train-default-v2", "train-default-v1"])
def test_shipped_default_configs_validate(name: str) -> None:
    preset = Path(__file__).parents[3] / "platform" / "lowdose" / "presets" / f"{name}.yaml"
    config = load_config(TrainingConfig, preset)
    assert config.model == "compact" and config.dose_e_per_px == 0.45


def test_init_weights_starts_from_an_artefact(store: Path, tmp_path: Path) -> None:
    first = train(_config(store, steps=4, checkpoint_every=4), tmp_path / "first", progress=False)
    assert first.artefact is not None
    tuned = _config(store, steps=1, validate_every=1, init_weights=str(first.artefact))
    fresh = _config(store, steps=1, validate_every=1)
    started = train(tuned, tmp_path / "tuned", progress=False, write_artefact=False)
    scratch = train(fresh, tmp_path / "fresh", progress=False, write_artefact=False)
    # One step from the trained weights lands elsewhere than one step from the seed's init,
    # and its first loss is that of the trained model, lower than the random init's.
    assert started.final_state_sha256 != scratch.final_state_sha256
    assert _losses(tmp_path / "tuned")[0] != _losses(tmp_path / "fresh")[0]


def test_init_weights_must_match_the_architecture(store: Path, tmp_path: Path) -> None:
    first = train(_config(store, steps=2, checkpoint_every=2), tmp_path / "first", progress=False)
    assert first.artefact is not None
    for options in (
        {"unshuffle": 2, "scales": 2, "base_channels": 2, "max_channels": 8},  # a narrower level
        {"unshuffle": 1, "scales": 2, "base_channels": 8, "max_channels": 8},  # another fold
    ):
        other = _config(store, init_weights=str(first.artefact), model_options=options)
        with pytest.raises(ConfigError, match="init_weights"):
            train(other, tmp_path / "other", progress=False, write_artefact=False)
    other = _config(store, init_weights=str(first.artefact), model="unet", model_options={"scales": 2})
    with pytest.raises(ConfigError, match="init_weights"):
        train(other, tmp_path / "other", progress=False, write_artefact=False)


def test_init_weights_widens_a_narrower_compact_model(store: Path, tmp_path: Path) -> None:
    first = train(_config(store, steps=4, checkpoint_every=4), tmp_path / "first", progress=False)
    assert first.artefact is not None
    wide = {"unshuffle": 2, "scales": 2, "base_channels": 8, "max_channels": 8}
    tuned = _config(store, steps=1, validate_every=1, init_weights=str(first.artefact), model_options=wide)
    fresh = _config(store, steps=1, validate_every=1, model_options=wide)
    train(tuned, tmp_path / "tuned", progress=False, write_artefact=False)
    train(fresh, tmp_path / "fresh", progress=False, write_artefact=False)
    # The widened run's first step sees the narrow model's loss (the same function), not a
    # random init's: the batch is the seed's, so the loss equals the narrow model's on it.
    narrow = _config(store, steps=1, validate_every=1, init_weights=str(first.artefact))
    train(narrow, tmp_path / "narrow", progress=False, write_artefact=False)
    assert _losses(tmp_path / "tuned")[0] == pytest.approx(_losses(tmp_path / "narrow")[0], rel=1e-5)
    assert _losses(tmp_path / "tuned")[0] != _losses(tmp_path / "fresh")[0]


def test_a_split_without_validation_images_is_refused_before_writing(tmp_path: Path) -> None:
    # two structures cannot fill three 80/10/10 splits: validation gets none
    two = write_synthetic_set(tmp_path / "two.zarr", n_structures=2, defoci=2, size=32)
    out = tmp_path / "run"
    config = _config(two, split_fractions=(0.8, 0.1, 0.1))
    with pytest.raises(ConfigError, match=r"leave the validation split of .*two\.zarr empty") as err:
        train(config, out, progress=False, config_path="t.yaml")
    assert str(err.value).startswith("t.yaml: split_fractions [0.8, 0.1, 0.1]")
    assert not out.exists()


def test_a_patch_larger_than_the_images_is_refused_before_writing(tmp_path: Path) -> None:
    # it used to fail at the first batch, after config.yaml and log.jsonl were written, so the
    # corrected re-run was refused as "an earlier training run" unless --overwrite
    data = write_synthetic_set(tmp_path / "s.zarr", n_structures=4, defoci=2, size=32)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"t\.yaml: patch_size 100 exceeds the images of .*\(32×32 px\)"):
        train(_config(data).model_copy(update={"patch_size": 100}), out, progress=False, config_path="t.yaml")
    assert not out.exists()


def test_a_selection_matching_no_image_names_what_the_store_holds(store: Path, tmp_path: Path) -> None:
    # it was reported as "split_fractions leave the training split empty (0 selected images)"
    out = tmp_path / "run"
    config = _config(store, selection={"defocus_nm": {"min": 100, "max": 200}})
    expected = r"^t\.yaml: selection .*defocus_nm.* matches none of the 12 images"
    with pytest.raises(ConfigError, match=expected) as err:
        train(config, out, progress=False, config_path="t.yaml")
    assert "it holds defocus_nm {" in str(err.value)
    assert not out.exists()
