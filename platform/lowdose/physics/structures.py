"""Pt nanoparticle on CeO2(111) atomic models, viewed along [110], with ground truth.

A model is a supercell ``L × L`` laterally (``L`` ≈ 5 nm, rounded to a whole
number of CeO2 repeats along x so the support is periodic) and as deep along the
beam as the thicker of support and particle, plus 2 Å of vacuum each side:

* **Support**: fluorite CeO2 (a = 5.411 Å) in the [110] zone axis with its
  O-terminated (111) surface horizontal at ``y = 0.62 L``, extending down to 2 Å
  above the cell edge and ``support_thickness_nm`` (3..6 nm) along the beam.
  ``faceted`` = one flat (111) terrace; ``stepped`` = a band one third of the
  cell wide, beside the particle, lowered by one O–Ce–O trilayer (3.12 Å),
  so the surface has two monatomic steps.
* **Particle**: fcc Pt (a = 3.924 Å) in the same [110] zone axis with
  Pt(111) ‖ CeO2(111) (cube-on-cube), a truncated Wulff shape (see
  :mod:`lowdose.physics.wulff` for the surface energies and their source), its
  (111) interface plane 2.3 Å above the top O plane, centred along the beam on
  the support and within ±3 Å (seeded) of the cell centre along x.
  Classes (``r111`` = centre-to-{111} distance, truncation as a fraction of it):
  ``PtNp1`` r111 = 6.5 Å, 0.70 — ``PtNp2`` 8.5 Å, 0.60 —
  ``PtNp3`` 10.5 Å, 0.50, γ(100) × 1.1 (more octahedral) —
  ``PtNp4`` 12.5 Å, 0.40, γ(110) × 0.95 (more {110} facets).
* **Defects**: ``D0, D1, D2, Dh, Ds`` as defined in :mod:`lowdose.physics.defects`.
* **Tilt**: a rigid rotation of the whole model by ``tilt_x_deg`` about the lab x
  axis or ``tilt_y_deg`` about the lab y axis, through the cell centre.

Ground truth is one row per projected column: ``x_A, y_A`` (the mean projected
position of the column's atoms after tilt), ``element``, ``n_atoms`` and
``surface`` (exposed Pt surface columns, see
:func:`lowdose.physics.defects.surface_columns`; support columns are never
flagged). Every model is a pure function of its :class:`StructureParams` (the
seed included). numpy/ase only; never imports dask, torch or abTEM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lowdose.physics.defects import DEFECT_CLASSES, apply_defect, group_columns, surface_columns
from lowdose.physics.wulff import (
    CEO2_A,
    FCC_BASIS,
    FLUORITE_O_BASIS,
    FloatArray,
    WulffShape,
    lattice_sites,
    plane_spacing_111_A,
    wulff_particle,
    x_period_A,
)

PARTICLE_CLASSES: dict[str, WulffShape] = {
    "PtNp1": WulffShape(r111_A=6.5, truncation=0.70),
    "PtNp2": WulffShape(r111_A=8.5, truncation=0.60),
    "PtNp3": WulffShape(r111_A=10.5, truncation=0.50, gamma_scale_100=1.1),
    "PtNp4": WulffShape(r111_A=12.5, truncation=0.40, gamma_scale_110=0.95),
}
"""Particle size/shape classes (see the module docstring)."""

SUPPORT_SURFACES = ("faceted", "stepped")
INTERFACE_GAP_A = 2.3
"""Distance (Å) from the top O plane of the support to the Pt interface plane."""
SURFACE_HEIGHT_FRAC = 0.62
"""Height of the support surface as a fraction of the cell, from the top of the image."""
_Z_MARGIN_A = 2.0


@dataclass(frozen=True)
class StructureParams:
    """Everything that defines one atomic model (with ``seed``, reproducibly).

    Attributes
    ----------
    particle
        Particle class, one of :data:`PARTICLE_CLASSES`.
    defect
        Surface defect class, one of :data:`~lowdose.physics.defects.DEFECT_CLASSES`.
    support_surface
        ``"faceted"`` or ``"stepped"``.
    support_thickness_nm
        Support thickness along the beam (nm).
    tilt_x_deg, tilt_y_deg
        Rigid tilt about the lab x / y axis (degrees).
    lateral_nm
        Requested lateral cell size (nm); rounded to whole CeO2 repeats along x.
    seed
        Seed of the particle offset, defect sites and step position.
    """

    particle: str = "PtNp2"
    defect: str = "D0"
    support_surface: str = "faceted"
    support_thickness_nm: float = 3.0
    tilt_x_deg: float = 0.0
    tilt_y_deg: float = 0.0
    lateral_nm: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.particle not in PARTICLE_CLASSES:
            raise ValueError(f"particle must be one of {sorted(PARTICLE_CLASSES)}, got {self.particle!r}")
        if self.defect not in DEFECT_CLASSES:
            raise ValueError(f"defect must be one of {DEFECT_CLASSES}, got {self.defect!r}")
        if self.support_surface not in SUPPORT_SURFACES:
            raise ValueError(f"support_surface must be one of {SUPPORT_SURFACES}")
        if not 0.5 <= self.support_thickness_nm <= 20:
            raise ValueError("support_thickness_nm must be in [0.5, 20]")
        if self.lateral_nm < 3.0:
            raise ValueError("lateral_nm must be at least 3 nm")

    def as_dict(self) -> dict[str, object]:
        """Plain-dict form (for tables and logs)."""
        return asdict(self)


@dataclass(frozen=True)
class Model:
    """A built atomic model in the imaging frame (Å; beam along +z)."""

    params: StructureParams
    positions: FloatArray
    symbols: np.ndarray
    cell_A: tuple[float, float, float]
    columns: pd.DataFrame
    """Ground truth: ``x_A, y_A, element, n_atoms, surface`` per projected column."""

    def to_ase(self) -> object:
        """The model as an :class:`ase.Atoms` (periodic laterally)."""
        from ase import Atoms

        return Atoms(
            symbols=list(self.symbols),
            positions=self.positions,
            cell=list(self.cell_A),
            pbc=True,
        )


def cell_size_A(lateral_nm: float) -> float:
    """Lateral cell edge (Å): ``lateral_nm`` rounded to whole CeO2 repeats along x."""
    period = x_period_A(CEO2_A)
    return float(max(1, round(lateral_nm * 10.0 / period)) * period)


def _support(
    length_A: float,
    thickness_A: float,
    z_centre_A: float,
    surface_y_A: float,
    step: tuple[float, float] | None,
) -> tuple[FloatArray, np.ndarray]:
    """CeO2 atoms filling ``[0, L) × [surface, L - 2) × thickness``; O-terminated (111) top."""
    depth = length_A - 2.0 - surface_y_A
    half = 0.5 * np.sqrt(length_A**2 + depth**2 + thickness_A**2) + CEO2_A
    ce = lattice_sites(CEO2_A, FCC_BASIS, half)
    o = lattice_sites(CEO2_A, FLUORITE_O_BASIS, half)
    # Ce (111) plane at the origin has its upper O plane at y = -a/(4√3); put that at the surface.
    offset = np.array([0.5 * length_A, surface_y_A + CEO2_A / (4 * np.sqrt(3.0)), z_centre_A])
    pos = np.concatenate([ce, o]) + offset
    sym = np.array(["Ce"] * len(ce) + ["O"] * len(o))
    lowered = np.zeros(len(pos), dtype=bool)
    if step is not None:
        lo, width = step
        lowered = np.mod(pos[:, 0] - lo, length_A) < width
    top = surface_y_A + np.where(lowered, plane_spacing_111_A(CEO2_A), 0.0)
    keep = (
        (pos[:, 0] >= 0)
        & (pos[:, 0] < length_A - 1e-6)
        & (pos[:, 1] >= top - 0.05)
        & (pos[:, 1] <= length_A - 2.0)
        & (np.abs(pos[:, 2] - z_centre_A) <= 0.5 * thickness_A)
    )
    return pos[keep], sym[keep]


def _rotation(tilt_x_deg: float, tilt_y_deg: float) -> FloatArray:
    ax, ay = np.deg2rad(tilt_x_deg), np.deg2rad(tilt_y_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return ry @ rx


def place_particle(particle: FloatArray, params: StructureParams, rng: np.random.Generator) -> FloatArray:
    """Pt positions moved from the particle frame (interface at y = 0) into the cell."""
    length = cell_size_A(params.lateral_nm)
    surface_y = SURFACE_HEIGHT_FRAC * length
    depth = max(params.support_thickness_nm * 10.0, np.ptp(particle[:, 2]))
    z_centre = _Z_MARGIN_A + 0.5 * depth
    x_shift = 0.5 * length + rng.uniform(-3.0, 3.0)
    pz = particle[:, 2]
    return particle + np.array([x_shift, surface_y - INTERFACE_GAP_A, z_centre - 0.5 * (pz.min() + pz.max())])


def build_model(params: StructureParams, pt_particle: FloatArray | None = None) -> Model:
    """Build the atomic model and its projected-column ground truth.

    Parameters
    ----------
    params
        Structure parameters (seed included).
    pt_particle
        Optional Pt positions in the particle frame (interface at ``y = 0``) that
        replace the Wulff particle + defect of ``params`` (used by the series
        generator to image its own surface configurations).
    """
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 0x5EED]))
    length = cell_size_A(params.lateral_nm)
    surface_y = SURFACE_HEIGHT_FRAC * length
    if pt_particle is None:
        base = wulff_particle(PARTICLE_CLASSES[params.particle])
        pt_particle = apply_defect(base, params.defect, rng)
    pt = place_particle(pt_particle, params, rng)
    depth = max(params.support_thickness_nm * 10.0, float(np.ptp(pt[:, 2])))
    z_centre = _Z_MARGIN_A + 0.5 * depth
    cell = (length, length, depth + 2 * _Z_MARGIN_A)

    step = None
    if params.support_surface == "stepped":
        half_width = 0.5 * float(np.ptp(pt[:, 0]))
        side = 1.0 if rng.random() < 0.5 else -1.0
        gap = rng.uniform(3.0, 6.0)
        width = length / 3.0
        x_c = float(pt[:, 0].mean())
        lo = x_c + half_width + gap if side > 0 else x_c - half_width - gap - width
        step = (float(np.mod(lo, length)), width)
    sup, sup_sym = _support(length, params.support_thickness_nm * 10.0, z_centre, surface_y, step)

    positions = np.concatenate([pt, sup])
    symbols = np.concatenate([np.array(["Pt"] * len(pt)), sup_sym])

    # Columns are defined before tilt (then they are exact lines along z).
    centres, inverse, counts = group_columns(positions)
    col_symbols = np.empty(len(centres), dtype=object)
    col_symbols[inverse] = symbols
    is_pt = col_symbols == "Pt"
    surface = np.zeros(len(centres), dtype=bool)
    interface_y = surface_y - INTERFACE_GAP_A
    surface[is_pt] = surface_columns(centres[is_pt], interface_y_A=interface_y)

    centre = np.array([0.5 * length, 0.5 * length, 0.5 * cell[2]])
    rot = _rotation(params.tilt_x_deg, params.tilt_y_deg)
    tilted = (positions - centre) @ rot.T + centre
    col_xy = np.zeros((len(centres), 2))
    np.add.at(col_xy, inverse, tilted[:, :2])
    col_xy /= counts[:, None]
    tilted[:, 0] = np.mod(tilted[:, 0], length)
    col_xy[:, 0] = np.mod(col_xy[:, 0], length)

    columns = pd.DataFrame(
        {
            "x_A": col_xy[:, 0],
            "y_A": col_xy[:, 1],
            "element": col_symbols.astype(str),
            "n_atoms": counts.astype(np.int32),
            "surface": surface,
        }
    )
    return Model(params=params, positions=tilted, symbols=symbols, cell_A=cell, columns=columns)
