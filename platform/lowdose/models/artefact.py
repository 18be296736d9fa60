"""Model artefacts: ``*.safetensors`` weights + ``model.yaml`` card; loading never unpickles.

An artefact directory holds ``model.safetensors`` and ``model.yaml`` with the
architecture (registry name + config), parameter count, weights SHA-256, FLOPs
per 1024² frame and receptive field (both measured from the model), the
training record (config, dataset hash, steps, validation PSNR) and the commands
that reproduce it. ``load_model("default")`` (or ``None``) loads the model shipped
in ``lowdose/weights/default``. Foreign PyTorch checkpoints are imported only
through :func:`import_torch_checkpoint`, with ``torch.load(weights_only=True)``.
torch/safetensors/yaml only; never import dask here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lowdose.errors import FormatError, LowdoseInputError
from lowdose.models.receptive import flops_per_frame, receptive_field
from lowdose.models.registry import build

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.yaml"
CARD_FORMAT = 1
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "weights" / "default"
"""Where the shipped default model lives inside the package."""


def model_sha256(path: str | Path) -> str:
    """SHA-256 of an artefact's weights file (``path`` is the file or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(model: nn.Module, size: int = 1024) -> dict[str, Any]:
    """Measured facts of a model for its card: parameters, FLOPs per frame, receptive field."""
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "flops_per_1024_frame": int(flops_per_frame(model, size=1024)),
        "flops_how": "2 × multiply–adds of every Conv2d, counted with forward hooks on a 1024² frame",
        "receptive_field_px": int(receptive_field(model, size=size)),
        "receptive_field_how": (
            f"extent of the non-zero input gradient of the centre output pixel, {size}² probe"
        ),
    }


def save_artefact(
    directory: str | Path,
    model: nn.Module,
    *,
    name: str,
    model_config: dict[str, Any],
    training: dict[str, Any] | None = None,
    reproduce: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an artefact directory (weights first, card last, both atomically).

    Parameters
    ----------
    directory
        Target directory (created).
    model
        The trained network (moved to CPU for saving).
    name, model_config
        Registry name and config that rebuild the architecture.
    training
        Training record (config, dataset hash, steps, validation PSNR, ...).
    reproduce
        Shell commands that reproduce the artefact.
    extra
        More card entries (e.g. test-set evaluation).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"architecture": name})
    tmp.replace(weights)
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "architecture": {"name": name, "config": dict(model_config)},
        "weights": {"file": WEIGHTS_FILE, "sha256": model_sha256(weights)},
        **describe(model.cpu().float()),
        "training": training or {},
        "reproduce": list(reproduce or []),
    }
    if extra:
        card.update(extra)
    write_card(directory, card)
    return directory


def write_card(directory: str | Path, card: dict[str, Any]) -> Path:
    """Atomically (re)write ``model.yaml`` in ``directory``."""
    path = Path(directory) / CARD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


def read_card(directory: str | Path) -> dict[str, Any]:
    """Read and minimally check an artefact's ``model.yaml``."""
    path = Path(directory) / CARD_FILE
    try:
        card = yaml.safe_load(path.read_text())
    except OSError:
        raise FormatError(f"{path}: model card missing") from None
    except yaml.YAMLError:
        raise FormatError(f"{path}: model card is not valid YAML") from None
    if not isinstance(card, dict) or "architecture" not in card or "name" not in card["architecture"]:
        raise FormatError(f"{path}: model card lacks architecture.name")
    return card


def _resolve(name_or_path: str | Path | None) -> Path:
    if name_or_path is None or str(name_or_path) == "default":
        return DEFAULT_DIR
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        path = path.parent
    if not path.exists():
        raise LowdoseInputError(
            f"{name_or_path}: no such model (expected 'default' or an artefact directory)"
        )
    return path


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing/unexpected/mis-shaped tensor is a clear error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise FormatError(f"{source}: weights do not match the architecture: missing tensor {missing[0]!r}")
    if unexpected:
        raise FormatError(
            f"{source}: weights do not match the architecture: unexpected tensor {unexpected[0]!r}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise FormatError(
                f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the architecture expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)


def load_model(
    name_or_path: str | Path | None = "default", device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an artefact as ``(model in eval mode, card)``; never unpickles.

    Parameters
    ----------
    name_or_path
        ``"default"``/``None`` (the shipped model), an artefact directory, or its
        ``.safetensors`` file (the card must sit beside it).
    device
        torch device for the model.

    Raises
    ------
    LowdoseInputError
        Missing artefact, bad card, or weights that do not fit the architecture
        (the message names the file and the mismatched tensor).
    """
    directory = _resolve(name_or_path)
    card = read_card(directory)
    architecture = card["architecture"]
    model = build(architecture["name"], **dict(architecture.get("config") or {}))
    weights = directory / card.get("weights", {}).get("file", WEIGHTS_FILE)
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise FormatError(f"{weights}: weights file missing") from None
    except (SafetensorError, OSError) as err:
        raise FormatError(f"{weights}: not a readable safetensors file ({err})") from None
    load_state_checked(model, state, str(weights))
    return model.to(device).eval(), card


def import_torch_checkpoint(path: str | Path, name: str, **config: Any) -> nn.Module:
    """Load a foreign PyTorch ``.pt`` state dict into ``build(name, **config)`` safely.

    Uses ``torch.load(weights_only=True)`` (no arbitrary code); accepts a bare
    state dict or one nested under ``state_dict``/``model``, and strips a DDP
    ``module.`` prefix. Save the result with :func:`save_artefact`.
    """
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises many kinds for non-checkpoints / unsafe pickles
        raise FormatError(f"{path}: not a weights-only PyTorch checkpoint ({type(err).__name__})") from None
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise FormatError(f"{path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in loaded.items()}
    model = build(name, **config)
    load_state_checked(model, state, str(path))
    return model.eval()
