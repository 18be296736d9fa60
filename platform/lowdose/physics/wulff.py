"""Crystal lattices in the imaging frame and Wulff-shaped Pt particles.

The imaging frame (all lengths in Å) has the beam along ``+z`` and the image
plane ``(x, y)`` with ``y`` growing *down* the image (row index), as in the
final images. Both crystals are viewed along a ⟨110⟩ zone axis with their (111)
planes horizontal: lab ``x`` = [11-2]/√6, lab ``y`` = −[111]/√3 (so the (111)
surface normal points *up* the image) and lab ``z`` = [-110]/√2.

Pt surface energies (PBE, Tran et al., *Sci. Data* 3, 160080 (2016), the
Crystalium database; rounded): γ(111) = 1.49, γ(100) = 1.81, γ(110) = 1.87 J/m².
The Wulff construction keeps every lattice site ``r`` (relative to the particle
centre) with ``r·n̂ ≤ R · γ(hkl)/γ(111)`` for every facet normal ``n̂`` of the
{111}, {100} and {110} families; a Winterbottom-style truncation plane (the
interface with the support) removes the part below a chosen height.

numpy only; never imports dask, torch or abTEM.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PT_A = 3.924
"""Pt lattice constant (Å), fcc."""
CEO2_A = 5.411
"""CeO2 lattice constant (Å), fluorite."""

PT_SURFACE_ENERGY_J_M2 = {"111": 1.49, "100": 1.81, "110": 1.87}
"""Pt surface energies used for the Wulff shapes (Tran et al. 2016, rounded)."""

_X = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)
_Y = -np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
_Z = np.array([-1.0, 1.0, 0.0]) / np.sqrt(2.0)
ORIENTATION = np.stack([_X, _Y, _Z])
"""Rows: lab x, y, z as unit vectors in cubic crystal coordinates (lab = R @ crystal)."""

FCC_BASIS = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], dtype=float)
FLUORITE_O_BASIS = np.array(list(itertools.product((0.25, 0.75), repeat=3)), dtype=float)


def x_period_A(a: float) -> float:
    """Repeat distance of an fcc lattice along lab x = [11-2] (``a·√6/2``)."""
    return float(a * np.sqrt(6.0) / 2.0)


def plane_spacing_111_A(a: float) -> float:
    """Spacing of (111) planes of an fcc lattice (``a/√3``)."""
    return float(a / np.sqrt(3.0))


def lattice_sites(a: float, basis: FloatArray, half_extent_A: float) -> FloatArray:
    """All sites of a cubic lattice with ``basis`` within a sphere, in the lab frame.

    Parameters
    ----------
    a
        Cubic lattice constant (Å).
    basis
        Fractional basis positions, shape (n, 3).
    half_extent_A
        Radius (Å) of the sphere around the origin that must be filled.

    Returns
    -------
    numpy.ndarray
        Lab-frame positions (Å), shape (m, 3); a lattice site sits at the origin.
    """
    n = int(np.ceil(half_extent_A / a)) + 1
    ijk = np.array(list(itertools.product(range(-n, n + 1), repeat=3)), dtype=float)
    frac = (ijk[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    lab = (frac * a) @ ORIENTATION.T
    return lab[np.einsum("ij,ij->i", lab, lab) <= half_extent_A**2]


def _family_normals(hkl: tuple[int, int, int]) -> FloatArray:
    perms = set(itertools.permutations(hkl))
    normals = set()
    for p in perms:
        for signs in itertools.product((1, -1), repeat=3):
            v = tuple(s * c for s, c in zip(signs, p, strict=True))
            normals.add(v)
    arr = np.array(sorted(normals), dtype=float)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    return arr @ ORIENTATION.T


@dataclass(frozen=True)
class WulffShape:
    """A Pt particle shape: size to the {111} facets and a truncation height.

    Attributes
    ----------
    r111_A
        Centre-to-{111}-facet distance (Å); other facets scale by γ(hkl)/γ(111).
    truncation
        Height of the interface plane below the centre, as a fraction of
        ``r111_A`` (1.0 = no truncation beyond the bottom {111} facet).
    gamma_scale_100, gamma_scale_110
        Multipliers on γ(100), γ(110) (1.0 = the tabulated values); values
        above 1 shrink those facets, giving a more octahedral shape.
    """

    r111_A: float
    truncation: float
    gamma_scale_100: float = 1.0
    gamma_scale_110: float = 1.0

    def facet_distances(self) -> dict[str, float]:
        """Centre-to-facet distance (Å) of each family."""
        g = PT_SURFACE_ENERGY_J_M2
        return {
            "111": self.r111_A,
            "100": self.r111_A * g["100"] * self.gamma_scale_100 / g["111"],
            "110": self.r111_A * g["110"] * self.gamma_scale_110 / g["111"],
        }


def wulff_particle(shape: WulffShape) -> FloatArray:
    """Pt atom positions (lab frame, Å) of a truncated Wulff particle centred at 0.

    The particle's bottom (interface) is a (111) plane at ``y = +h`` (down the
    image), with ``h`` the largest Pt (111) plane height ≤ ``truncation·r111_A``.
    """
    dist = shape.facet_distances()
    extent = max(dist.values()) * 1.8 + PT_A
    sites = lattice_sites(PT_A, FCC_BASIS, extent)
    keep = np.ones(len(sites), dtype=bool)
    for hkl, d in dist.items():
        normals = _family_normals(tuple(int(c) for c in hkl))  # type: ignore[arg-type]
        keep &= (sites @ normals.T <= d + 1e-6).all(axis=1)
    sites = sites[keep]
    spacing = plane_spacing_111_A(PT_A)
    h = np.floor(shape.truncation * shape.r111_A / spacing + 1e-6) * spacing
    sites = sites[sites[:, 1] <= h + 1e-6]
    # Put the interface plane at y = 0 (particle extends to negative y, up the image).
    sites = sites - np.array([0.0, h, 0.0])
    return sites
