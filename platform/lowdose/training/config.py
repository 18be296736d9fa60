"""``TrainingConfig``: everything ``lowdose train`` needs, validated strictly.

Registered as config kind ``train``. No torch, numpy or dask imports here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lowdose.config.base import LowdoseConfig


class TrainingConfig(LowdoseConfig):
    """A training run: data, splits, model, sampling, optimisation and output cadence."""

    data: str = Field(..., description="Path of the SimulationSet (.zarr) to train on.")
    selection: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-image coord criteria passed to store.simulation_set.select before splitting "
        "(scalar = equality, list = membership, {min:, max:} = inclusive range).",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train/validation/test fractions of structures (model_id)."
    )
    split_seed: int = Field(0, description="Seed of the structure shuffle that makes the splits.")
    model: str = Field("compact", description="Registered model name (lowdose.models.registry).")
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword config of the model (see lowdose.models.registry.build)."
    )
    init_weights: str | None = Field(
        None,
        description="Start from this model artefact (name, directory or .safetensors beside its card) "
        "instead of a random init; its architecture must equal model/model_options (fine-tuning), or be a "
        "narrower compact network (same unshuffle and scales), which is widened without changing its output.",
    )
    patch_size: int = Field(256, ge=16, description="Training patch side in pixels.")
    batch_size: int = Field(8, ge=1, description="Global batch size (split evenly over DDP ranks).")
    steps: int = Field(2000, ge=1, description="Maximum optimiser steps.")
    validate_every: int = Field(100, ge=1, description="Steps between validations.")
    validation_patches: int = Field(16, ge=1, description="Fixed validation patches (fixed noise).")
    validation_patch_size: int = Field(512, ge=16, description="Validation patch side in pixels.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between checkpoints.")
    dose_e_per_px: float = Field(0.45, gt=0, description="Dose of the Poisson noise drawn for each sample.")
    seed: int = Field(0, description="Run seed: model init, patch selectors and noise all derive from it.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lr_patience: int = Field(3, ge=0, description="Validations without improvement before halving the lr.")
    lr_factor: float = Field(0.5, gt=0, lt=1, description="Learning-rate factor on a plateau.")
    early_stopping_patience: int = Field(
        10, ge=1, description="Validations without improvement before stopping."
    )
    flips: bool = Field(True, description="Random horizontal/vertical flips.")
    rotation_deg: float = Field(45.0, ge=0, le=45, description="Rotation drawn uniformly in ±this.")
    scale_range: tuple[float, float] = Field((0.955, 1.055), description="Resize factor range.")
    prefetch: int = Field(4, ge=1, description="Batches prepared ahead in background threads.")
    loader_threads: int = Field(2, ge=1, description="Background threads reading and augmenting patches.")
    torch_threads: int = Field(2, ge=1, description="torch intra-op threads per process.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training device.")
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on CPU).")
    ddp_rendezvous_timeout_s: float = Field(
        300.0, gt=0, description="DDP: seconds every rank waits for all ranks to join before failing."
    )
    ddp_timeout_s: float = Field(
        1800.0, gt=0, description="DDP: seconds a collective waits for the other ranks before failing."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError("split_fractions must be non-negative and sum to 1")
        if self.split_fractions[0] == 0 or self.split_fractions[1] == 0:
            raise ValueError("split_fractions needs non-zero train and validation fractions")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError("scale_range must be (low, high) with 0 < low <= high")
        return self
