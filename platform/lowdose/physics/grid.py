"""The simulation grid: a strict config and its expansion into per-structure jobs.

A :class:`SimulationGridConfig` declares the parameter grid (particle, defect,
support surface, support thickness, tilt states, defocus values) and either runs
the full Cartesian product or a seeded subset of ``n_structures`` models of it.
:func:`expand_grid` turns it into :class:`StructureJob` s in a fixed order with
every structure's seed drawn up front from the grid seed, so that re-runs and
retries are byte-identical. Pure python/numpy; never imports dask, torch or abTEM.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from lowdose.config import LowdoseConfig, validate_config
from lowdose.errors import ConfigError
from lowdose.physics.defects import DEFECT_CLASSES
from lowdose.physics.optics import Optics
from lowdose.physics.structures import PARTICLE_CLASSES, SUPPORT_SURFACES, StructureParams

PRESETS = ("tiny", "small", "medium", "paper-grid")
"""Grid presets shipped in ``lowdose/presets/<name>.yaml``."""


class OpticsConfig(LowdoseConfig):
    """Optics block of a grid config (defaults: the paper's microscope)."""

    voltage_kV: Annotated[float, Field(gt=0)] = 300.0
    C3_um: float = -13.0
    C5_mm: float = 5.0
    focal_spread_nm: Annotated[float, Field(ge=0)] = 4.0
    convergence_mrad: Annotated[float, Field(ge=0)] = 0.2
    vibration_pm: Annotated[float, Field(ge=0)] = 50.0
    focal_nodes: Annotated[int, Field(ge=0, le=64)] = 7

    def to_optics(self) -> Optics:
        """The physics dataclass."""
        return Optics(**self.model_dump(exclude={"version"}))


class SimulationGridConfig(LowdoseConfig):
    """The parameter grid of a SimulationSet (``lowdose simulate CONFIG.yaml``)."""

    particles: list[str] = Field(default_factory=lambda: list(PARTICLE_CLASSES))
    defects: list[str] = Field(default_factory=lambda: list(DEFECT_CLASSES))
    support_surfaces: list[str] = Field(default_factory=lambda: list(SUPPORT_SURFACES))
    support_thickness_nm: list[float] = Field(default_factory=lambda: [3.0, 4.0, 5.0, 6.0])
    tilt_deg: list[float] = Field(
        default_factory=lambda: [0.0, 1.0, 2.0, 3.0, 4.0],
        description="Tilt magnitudes; each non-zero one is used about every axis in tilt_axes.",
    )
    tilt_axes: list[Literal["x", "y"]] = Field(default_factory=lambda: ["x", "y"])  # type: ignore[arg-type]
    defocus_nm: list[float] = Field(default_factory=lambda: [float(d) for d in range(21)])
    n_structures: int | None = Field(
        None, ge=1, description="Seeded subset of the full product; null = every combination."
    )
    seed: int = Field(0, ge=0)
    lateral_nm: float = Field(5.0, ge=3.0, le=20.0)
    gpts: int = Field(1024, ge=64, le=4096)
    slice_thickness_A: float = Field(2.0, gt=0)
    pixel_size_A: float = Field(0.061, gt=0)
    dose_e_per_px: float = Field(0.45, gt=0)
    optics: OpticsConfig = Field(default_factory=lambda: OpticsConfig.model_validate({}))

    @field_validator("particles")
    @classmethod
    def _known_particles(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PARTICLE_CLASSES]
        if bad or not v:
            raise ValueError(f"particles must be a non-empty subset of {sorted(PARTICLE_CLASSES)}, got {bad}")
        return v

    @field_validator("defects")
    @classmethod
    def _known_defects(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DEFECT_CLASSES]
        if bad or not v:
            raise ValueError(f"defects must be a non-empty subset of {list(DEFECT_CLASSES)}, got {bad}")
        return v

    @field_validator("support_surfaces")
    @classmethod
    def _known_surfaces(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SUPPORT_SURFACES]
        if bad or not v:
            raise ValueError(f"support_surfaces must be a non-empty subset of {list(SUPPORT_SURFACES)}")
        return v

    @field_validator("support_thickness_nm")
    @classmethod
    def _thickness(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.5 <= t <= 20 for t in v):
            raise ValueError("support_thickness_nm must be a non-empty list of values in [0.5, 20]")
        return v

    @field_validator("tilt_deg", "defocus_nm")
    @classmethod
    def _non_empty_unique(cls, v: list[float]) -> list[float]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list of distinct values")
        return v

    @model_validator(mode="after")
    def _subset_fits(self) -> SimulationGridConfig:
        total = len(tilt_states(self)) * len(self.particles) * len(self.defects)
        total *= len(self.support_surfaces) * len(self.support_thickness_nm)
        if self.n_structures is not None and self.n_structures > total:
            raise ValueError(f"n_structures={self.n_structures} exceeds the {total} combinations of the grid")
        return self

    def digest(self) -> str:
        """A short hash of everything that determines the images (resume guard)."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StructureJob:
    """One structure of the grid: its model id, parameters and image slots."""

    model_id: int
    params: StructureParams
    first_image: int
    n_images: int


def tilt_states(config: SimulationGridConfig) -> list[tuple[float, float]]:
    """``(tilt_x_deg, tilt_y_deg)`` pairs: zero once, each non-zero value about each axis."""
    states: list[tuple[float, float]] = []
    for t in config.tilt_deg:
        if t == 0:
            states.append((0.0, 0.0))
            continue
        for axis in config.tilt_axes:
            states.append((float(t), 0.0) if axis == "x" else (0.0, float(t)))
    return states


def _balanced_subset(combos: Sequence[tuple[object, ...]], n: int, rng: np.random.Generator) -> list[int]:
    # Shuffle within each (particle, defect) class, then deal round-robin over the
    # classes so that every class is represented as evenly as n allows.
    groups: dict[tuple[object, object], list[int]] = {}
    for i, combo in enumerate(combos):
        groups.setdefault((combo[0], combo[1]), []).append(i)
    queues = [list(rng.permutation(members)) for members in groups.values()]
    picked: list[int] = []
    while len(picked) < n:
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(int(queue.pop()))
    return sorted(picked)


def expand_grid(config: SimulationGridConfig) -> list[StructureJob]:
    """Per-structure jobs in a fixed order, with their seeds drawn up front.

    The full product is ordered particle → defect → surface → thickness → tilt;
    with ``n_structures`` a seeded subset, balanced over the (particle, defect)
    classes, is kept in that order. Structure seeds
    come from one generator seeded by ``config.seed``.
    """
    combos = list(
        itertools.product(
            config.particles,
            config.defects,
            config.support_surfaces,
            config.support_thickness_nm,
            tilt_states(config),
        )
    )
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x6121D]))
    if config.n_structures is not None:
        combos = [combos[i] for i in _balanced_subset(combos, config.n_structures, rng)]
    seeds = rng.integers(0, 2**31 - 1, size=len(combos))
    n_def = len(config.defocus_nm)
    jobs = []
    for model_id, ((particle, defect, surface, thickness, (tx, ty)), seed) in enumerate(
        zip(combos, seeds, strict=True)
    ):
        params = StructureParams(
            particle=particle,
            defect=defect,
            support_surface=surface,
            support_thickness_nm=float(thickness),
            tilt_x_deg=tx,
            tilt_y_deg=ty,
            lateral_nm=config.lateral_nm,
            seed=int(seed),
        )
        jobs.append(
            StructureJob(model_id=model_id, params=params, first_image=model_id * n_def, n_images=n_def)
        )
    return jobs


def load_preset(name: str) -> SimulationGridConfig:
    """The grid preset ``name`` shipped with the package (see :data:`PRESETS`)."""
    import yaml

    if name not in PRESETS:
        raise ConfigError(f"unknown simulation preset {name!r}; expected one of {list(PRESETS)}")
    text = resources.files("lowdose").joinpath("presets", f"{name}.yaml").read_text()
    return validate_config(SimulationGridConfig, yaml.safe_load(text), f"preset {name}")
