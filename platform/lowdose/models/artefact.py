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
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
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


PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
"""Suffixes of pickle-based checkpoints, which :func:`load_model` refuses."""


def _refuse_pickle(path: Path) -> LowdoseInputError:
    return FormatError(
        f"{path}: a pickle-based checkpoint; lowdose loads models only from safetensors artefacts "
        "(unpickling a file can run code). Import a trusted state dict explicitly with "
        "'lowdose model import' or lowdose.models.artefact.import_torch_checkpoint "
        "(torch.load weights_only=True)"
    )


def _resolve(name_or_path: str | Path | None) -> Path:
    if name_or_path is None or str(name_or_path) == "default":
        return DEFAULT_DIR
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        path = path.parent
    elif path.suffix.lower() in PICKLE_SUFFIXES or path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _refuse_pickle(path)
        raise LowdoseInputError(
            f"{path}: not a model artefact (expected 'default', an artefact directory holding "
            f"{CARD_FILE} and {WEIGHTS_FILE}, or its .safetensors file)"
        )
    if not path.exists():
        raise LowdoseInputError(
            f"{name_or_path}: no such model (expected 'default' or an artefact directory)"
        )
    return path


def _weights_path(directory: Path, card: dict[str, Any]) -> Path:
    """The weights file the card names: a plain ``*.safetensors`` name inside the artefact directory."""
    entry = card.get("weights") or {}
    name = entry.get("file", WEIGHTS_FILE) if isinstance(entry, dict) else WEIGHTS_FILE
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise FormatError(
            f"{directory / CARD_FILE}: weights.file {name!r} must be a file name inside the artefact "
            "directory (no folders, no '..')"
        )
    if Path(name).suffix.lower() in PICKLE_SUFFIXES:
        raise _refuse_pickle(directory / name)
    if not name.endswith(".safetensors"):
        raise FormatError(f"{directory / CARD_FILE}: weights.file {name!r}; expected a .safetensors file")
    return directory / name


def _check_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise FormatError(f"{source}: weights do not match the architecture: missing tensor {missing[0]!r}")
    if unexpected:
        raise FormatError(
            f"{source}: weights do not match the architecture: unexpected tensor {unexpected[0]!r}"
        )
    for key, shape in found.items():
        if shape != expected[key]:
            raise FormatError(
                f"{source}: tensor {key!r} has shape {shape}, the architecture expects {expected[key]}"
            )


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing/unexpected/mis-shaped tensor is a clear error."""
    _check_shapes(_shapes(model.state_dict()), _shapes(state), source)
    model.load_state_dict(state)


def _build_from_card(directory: Path, card: dict[str, Any], device: str | None = None) -> nn.Module:
    architecture = card["architecture"]
    config = architecture.get("config") or {}
    if not isinstance(config, dict):
        raise FormatError(f"{directory / CARD_FILE}: architecture.config must be a mapping")
    try:
        if device is None:
            return build(str(architecture["name"]), **config)
        with torch.device(device):
            return build(str(architecture["name"]), **config)
    except LowdoseInputError as err:
        raise FormatError(f"{directory / CARD_FILE}: architecture: {err}") from None


def _stored_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header (no tensor data is read)."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except FileNotFoundError:
        raise FormatError(f"{weights}: weights file missing") from None
    except (SafetensorError, OSError) as err:
        raise FormatError(f"{weights}: not a readable safetensors file ({err})") from None


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
    weights = _weights_path(directory, card)
    # Check the card's architecture against the stored tensor shapes on the meta device
    # first: a card with absurd sizes costs no memory before it is refused.
    skeleton = _build_from_card(directory, card, device="meta")
    _check_shapes(_shapes(skeleton.state_dict()), _stored_shapes(weights), str(weights))
    model = _build_from_card(directory, card)
    try:
        state = load_file(str(weights))
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
    except pickle.UnpicklingError as err:  # what the weights-only unpickler raises for code
        first = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
        first = first.split(". Please", 1)[0]  # drop torch's hint on how to allowlist the global
        raise FormatError(
            f"{path}: refused: the checkpoint holds Python objects other than tensors, and "
            f"unpickling them could run code{f' ({first})' if first else ''}; only plain state dicts "
            "of tensors are imported"
        ) from None
    except Exception as err:  # torch raises many kinds for files that are not checkpoints
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
