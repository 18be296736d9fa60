"""Training checkpoints without pickles: safetensors for tensors, JSON for the rest.

A checkpoint directory holds ``model.safetensors`` (the state dict),
``optimizer.safetensors`` (per-parameter optimiser tensors) and ``state.json``
(step, optimiser param groups, scheduler, early-stopping state, log position).
It is written to ``<dir>.tmp`` and renamed into place (the previous one moves to
``<dir>.old`` for the instant between the two renames; loading falls back to it), so a
crash never leaves a half-written checkpoint. torch/safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowdose.errors import LowdoseInputError


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Atomically write model, optimiser and JSON ``state`` to ``directory``."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_state, str(tmp / "model.safetensors"))
    tensors, optimizer_json = _optimizer_tensors(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": optimizer_json}, indent=1))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def load_checkpoint(
    directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model and optimiser in place from ``directory``; return the JSON state."""
    directory = Path(directory)
    previous = directory.with_name(directory.name + ".old")
    if not (directory / "state.json").exists() and (previous / "state.json").exists():
        directory = previous  # killed between moving the old checkpoint aside and renaming the new one
    if not (directory / "state.json").exists():
        raise LowdoseInputError(f"{directory}: no checkpoint to resume from (state.json missing)")
    state: dict[str, Any] = json.loads((directory / "state.json").read_text())
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    tensors = load_file(str(directory / "optimizer.safetensors"))
    optimizer_json = state.pop("optimizer")
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    for key, value in optimizer_json["scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": optimizer_json["param_groups"]})
    return state
