"""Denoising networks (torch only): the paper's U-Net, baselines, and the compact default.

Build by name with :func:`lowdose.models.registry.build`; save and load artefacts
with :mod:`lowdose.models.artefact`. This package never imports dask.
"""

from __future__ import annotations

from lowdose.models.registry import MODELS, build

__all__ = ["MODELS", "build"]
