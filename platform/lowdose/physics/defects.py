"""Surface defect classes of the Pt particle and projected-column bookkeeping.

A *column* is the set of atoms sharing one projected position along the beam
(``z``). Defects act on the particle's exposed surface columns (those with fewer
than six projected Pt neighbours within 2.9 Å, excluding the interface plane
with the support):

``D0``
    Pristine Wulff particle, no defect.
``D1``
    One atom removed from the beam-exit end of one surface column.
``D2``
    One atom removed from the end of each of two different surface columns.
``Dh``
    A hollowed column: all atoms but one (the one nearest the column's middle)
    removed from one surface column with at least three atoms.
``Ds``
    A new surface site: a short adatom column of 1–3 Pt atoms at an empty fcc
    lattice site next to the particle's free surface (at least two occupied
    neighbouring columns, above the interface plane).

All randomness comes from the ``numpy.random.Generator`` passed in. numpy only;
never imports dask, torch or abTEM.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lowdose.physics.wulff import FCC_BASIS, PT_A, FloatArray, lattice_sites

DEFECT_CLASSES = ("D0", "D1", "D2", "Dh", "Ds")
"""Surface defect classes (see the module docstring)."""

NEIGHBOUR_RADIUS_A = 2.9
"""Projected distance (Å) within which two Pt columns count as neighbours in [110]."""

BULK_NEIGHBOURS = 6


def column_keys(xy: FloatArray) -> npt.NDArray[np.int64]:
    """Integer keys (0.001 Å grid) identifying the projected column of each atom."""
    return np.round(np.asarray(xy)[:, :2] * 1000.0).astype(np.int64)


def group_columns(positions: FloatArray) -> tuple[FloatArray, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Group atoms into projected columns.

    Returns
    -------
    centres
        (n_columns, 2) projected x, y (Å) of each column.
    inverse
        Column index of each atom.
    counts
        Atoms per column.
    """
    keys = column_keys(positions)
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return uniq / 1000.0, inverse.ravel(), counts


def neighbour_counts(centres: FloatArray, radius_A: float = NEIGHBOUR_RADIUS_A) -> npt.NDArray[np.int64]:
    """Number of other columns within ``radius_A`` of each column (projected)."""
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    return ((d < radius_A) & (d > 1e-6)).sum(axis=1)


def surface_columns(centres: FloatArray, interface_y_A: float = 0.0) -> npt.NDArray[np.bool_]:
    """Exposed Pt surface columns: < 6 projected neighbours, not in the interface plane.

    Interface-plane columns count as surface only at the particle's corners
    (≤ 3 neighbours).
    """
    nb = neighbour_counts(centres)
    in_interface = centres[:, 1] > interface_y_A - 0.5
    return np.where(in_interface, nb <= 3, nb < BULK_NEIGHBOURS)


def _remove_end_atoms(
    positions: FloatArray, inverse: npt.NDArray[np.int64], column: int, n_remove: int
) -> npt.NDArray[np.bool_]:
    idx = np.flatnonzero(inverse == column)
    order = idx[np.argsort(positions[idx, 2])]
    keep = np.ones(len(positions), dtype=bool)
    keep[order[len(order) - n_remove :]] = False
    return keep


def adatom_sites(particle: FloatArray) -> list[FloatArray]:
    """Empty fcc column sites next to the free surface, each as its lattice atoms (Å).

    A site qualifies if it is not occupied, lies above the interface plane and has
    at least two occupied Pt columns within the neighbour radius. Each list entry
    holds that column's lattice positions, sorted by distance from the particle's
    middle along ``z``.
    """
    centres, _, _ = group_columns(particle)
    y_min = particle[:, 1].min()
    # fcc is a Bravais lattice: every site is the anchor atom plus a lattice vector.
    anchor = particle[0]
    extent = float(np.linalg.norm(particle - anchor, axis=1).max()) + 2 * PT_A
    lattice = lattice_sites(PT_A, FCC_BASIS, extent) + anchor
    lat_centres, lat_inv, _ = group_columns(lattice)
    occupied = {tuple(k) for k in column_keys(centres)}
    z_mid = 0.5 * (particle[:, 2].min() + particle[:, 2].max())
    z_lo, z_hi = particle[:, 2].min() - 1e-6, particle[:, 2].max() + 1e-6
    sites = []
    for i, c in enumerate(lat_centres):
        if tuple(column_keys(c[None, :])[0]) in occupied:
            continue
        if c[1] > -0.5 or c[1] < y_min - 3.0:
            continue
        d = np.linalg.norm(centres - c[None, :], axis=1)
        if int((d < NEIGHBOUR_RADIUS_A).sum()) < 2:
            continue
        atoms = lattice[lat_inv == i]
        atoms = atoms[(atoms[:, 2] >= z_lo) & (atoms[:, 2] <= z_hi)]
        if len(atoms) == 0:
            continue
        sites.append(atoms[np.argsort(np.abs(atoms[:, 2] - z_mid))])
    return sites


def apply_defect(particle: FloatArray, defect: str, rng: np.random.Generator) -> FloatArray:
    """Return the Pt positions of ``particle`` with the surface defect ``defect`` applied.

    Parameters
    ----------
    particle
        Pt atom positions (Å, lab frame, interface plane at ``y = 0``).
    defect
        One of :data:`DEFECT_CLASSES`.
    rng
        Random generator choosing the defect site(s).
    """
    if defect not in DEFECT_CLASSES:
        raise ValueError(f"unknown defect class {defect!r}; expected one of {DEFECT_CLASSES}")
    if defect == "D0":
        return particle
    centres, inverse, counts = group_columns(particle)
    surface = surface_columns(centres)
    if defect == "Ds":
        sites = adatom_sites(particle)
        site = sites[int(rng.integers(len(sites)))]
        n = int(rng.integers(1, 4))
        return np.concatenate([particle, site[:n]])
    min_atoms = 3 if defect == "Dh" else 2
    candidates = np.flatnonzero(surface & (counts >= min_atoms))
    if defect == "D1":
        col = int(rng.choice(candidates))
        return particle[_remove_end_atoms(particle, inverse, col, 1)]
    if defect == "D2":
        cols = rng.choice(candidates, size=2, replace=False)
        keep = _remove_end_atoms(particle, inverse, int(cols[0]), 1)
        keep &= _remove_end_atoms(particle, inverse, int(cols[1]), 1)
        return particle[keep]
    # Dh: keep only the atom nearest the middle of the column.
    col = int(rng.choice(candidates))
    idx = np.flatnonzero(inverse == col)
    z = particle[idx, 2]
    middle = idx[np.argmin(np.abs(z - np.median(z)))]
    keep = np.ones(len(particle), dtype=bool)
    keep[idx] = False
    keep[middle] = True
    return particle[keep]
