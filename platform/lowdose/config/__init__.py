"""Pydantic v2 configuration models for every YAML file a user writes.

The base class :class:`LowdoseConfig` is strict (unknown keys are errors), has a
``version`` field and validates on assignment. The configs of the individual
stages live beside their code and are listed in :data:`CONFIG_KINDS` (as dotted
paths, imported on demand) so that ``lowdose config validate`` can check any of
them. This package never imports numpy, dask or torch.
"""

from __future__ import annotations

import importlib

from lowdose.config.base import (
    CONFIG_VERSION,
    LowdoseConfig,
    load_config,
    save_config,
    validate_config,
)
from lowdose.errors import ConfigError

CONFIG_KINDS: dict[str, str] = {
    "base": "lowdose.config.base:LowdoseConfig",
    "train": "lowdose.training.config:TrainingConfig",
    "pipeline": "lowdose.parallel.pipeline:PipelineConfig",
    "simulate": "lowdose.physics.grid:SimulationGridConfig",
    "analysis": "lowdose.analysis.frame:AnalysisConfig",
}
"""Config kind name → ``module:Class`` of its pydantic model."""


def config_class(kind: str) -> type[LowdoseConfig]:
    """Return the config class registered as ``kind``."""
    try:
        target = CONFIG_KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {sorted(CONFIG_KINDS)}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[LowdoseConfig] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = [
    "CONFIG_KINDS",
    "CONFIG_VERSION",
    "LowdoseConfig",
    "config_class",
    "load_config",
    "save_config",
    "validate_config",
]
