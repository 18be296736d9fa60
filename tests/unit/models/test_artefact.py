"""Model artefacts: round trip, no pickles, clear mismatch errors, the shipped default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from lowdose.errors import FormatError, LowdoseInputError
from lowdose.models import build
from lowdose.models.artefact import (
    DEFAULT_DIR,
    import_torch_checkpoint,
    load_model,
    model_sha256,
    save_artefact,
)


class NotWeights:
    """An arbitrary object: weights-only loading must refuse to unpickle it."""


CONFIG = {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8}


def test_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("compact", **CONFIG)
    out = save_artefact(
        tmp_path / "m", model, name="compact", model_config=CONFIG, reproduce=["lowdose train x"]
    )
    loaded, card = load_model(out)
    x = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert card["architecture"] == {"name": "compact", "config": CONFIG}
    assert card["weights"]["sha256"] == model_sha256(out) == model_sha256(out / "model.safetensors")
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["receptive_field_px"] > 0 and card["flops_per_1024_frame"] > 0
    # The .safetensors path works too.
    load_model(out / "model.safetensors")


def test_mismatched_weights_name_file_and_tensor(tmp_path: Path) -> None:
    model = build("compact", **CONFIG)
    out = save_artefact(tmp_path / "m", model, name="compact", model_config=CONFIG)
    card = yaml.safe_load((out / "model.yaml").read_text())
    card["architecture"]["config"]["base_channels"] = 6
    (out / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(FormatError, match=r"model\.safetensors: tensor '[\w.]+' has shape"):
        load_model(out)
    state = {k: v for k, v in build("compact", **CONFIG).state_dict().items() if "head" not in k}
    card["architecture"]["config"]["base_channels"] = 4
    (out / "model.yaml").write_text(yaml.safe_dump(card))
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(FormatError, match=r"missing tensor 'core\.head\.weight'"):
        load_model(out)


def test_missing_model_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(LowdoseInputError):
        load_model(tmp_path / "nothing")


def test_import_foreign_checkpoint_weights_only(tmp_path: Path) -> None:
    model = build("dncnn", depth=3, channels=4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.pt")
    imported = import_torch_checkpoint(tmp_path / "m.pt", "dncnn", depth=3, channels=4)
    for key, value in model.state_dict().items():
        assert torch.equal(imported.state_dict()[key], value)

    torch.save({"state_dict": NotWeights()}, tmp_path / "evil.pt")
    with pytest.raises(FormatError, match=r"evil\.pt"):
        import_torch_checkpoint(tmp_path / "evil.pt", "dncnn", depth=3, channels=4)


@pytest.mark.skipif(not (DEFAULT_DIR / "model.yaml").exists(), reason="default model not shipped yet")
def test_shipped_default_loads_and_is_small() -> None:
    model, card = load_model("default")
    assert (DEFAULT_DIR / "model.safetensors").stat().st_size <= 20 * 2**20
    assert card["weights"]["sha256"] == model_sha256(DEFAULT_DIR)
    assert card["receptive_field_px"] >= 400
    assert load_model(None)[1] == card
    with torch.no_grad():
        out = model(torch.poisson(torch.full((1, 1, 67, 45), 0.45)))
    assert out.shape == (1, 1, 67, 45)
