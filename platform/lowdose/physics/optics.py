"""Microscope and imaging conditions of the simulations (one dataclass, units in names).

Defaults are the paper's: 300 kV, C3 = −13 µm, C5 = 5 mm, other aberrations 0,
focal spread 4 nm (rms), beam convergence 0.2 mrad (semi-angle), and a 50 pm
isotropic image-spread (vibration) envelope applied to the image intensity.

Defocus convention: ``defocus_nm`` is the first-order aberration coefficient
C1 (Krivanek notation, the same sign as C3): positive = overfocus. With the
negative C3 of the paper, bright ("white") atom contrast appears at a few nm of
*positive* C1 (negative-Cs imaging). abTEM's ``defocus`` is −C1, so
``abtem_defocus_A = -10 * defocus_nm``. numpy only; never imports dask, torch or abTEM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_M0C2_EV = 510998.95
_HC_EV_A = 12398.419843


def electron_wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength (Å) at an accelerating voltage (kV)."""
    e = voltage_kV * 1e3
    return float(_HC_EV_A / np.sqrt(e * (2 * _M0C2_EV + e)))


@dataclass(frozen=True)
class Optics:
    """HRTEM imaging conditions.

    Attributes
    ----------
    voltage_kV
        Accelerating voltage.
    C3_um
        Third-order spherical aberration (µm); negative for NCSI.
    C5_mm
        Fifth-order spherical aberration (mm).
    focal_spread_nm
        Rms focal spread Δ (a Gaussian distribution of defocus of that standard deviation).
    focal_nodes
        How partial temporal coherence is computed. ``> 0`` (default 7): explicitly, as
        the paper did — the intensity is averaged over ``focal_nodes`` defoci
        ``C1 + Δ z_i`` with Gauss–Hermite weights (exact for the Gaussian spread up to
        the quadrature order). ``0``: the quasi-coherent temporal envelope
        ``exp(-(π λ Δ q²)² / 2)`` on the wave, which is cheaper but, for thick Pt
        columns, damps the non-linear interference terms too and turns white columns
        grey or black (see docs/ARCHITECTURE.md, physics).
    convergence_mrad
        Beam convergence semi-angle θ; spatial envelope
        ``exp(-(π θ / λ)² (C1 λ q + C3 λ³ q³ + C5 λ⁵ q⁵)²)``.
    vibration_pm
        Rms isotropic image spread σ; the image intensity's spectrum is damped
        by ``exp(-2 π² σ² q²)``.
    """

    voltage_kV: float = 300.0
    C3_um: float = -13.0
    C5_mm: float = 5.0
    focal_spread_nm: float = 4.0
    convergence_mrad: float = 0.2
    vibration_pm: float = 50.0
    focal_nodes: int = 7

    @property
    def wavelength_A(self) -> float:
        """Electron wavelength (Å)."""
        return electron_wavelength_A(self.voltage_kV)

    def as_attrs(self) -> dict[str, float]:
        """The optics as store attrs (names carry units)."""
        return {k: float(v) for k, v in asdict(self).items()}


def abtem_defocus_A(defocus_nm: float) -> float:
    """AbTEM's ``defocus`` (Å, = −C1) for a lowdose ``defocus_nm`` (= C1 in nm)."""
    return -10.0 * float(defocus_nm)
