"""Multislice exit waves (abTEM) → HRTEM image stacks over defocus, at the nominal dose.

One multislice run per structure and tilt gives the exit wave; every defocus
value is then applied to that same wave in Fourier space (no re-run of the
multislice per defocus): the coherent transfer function ``exp(-iχ)`` with
``χ(q) = 2π/λ (½ C1 α² + ¼ C3 α⁴ + ⅙ C5 α⁶)``, ``α = λq`` (the same form and
sign as abTEM's ``Aberrations``, whose ``defocus`` is −C1), times the
quasi-coherent spatial (convergence) envelope of
:class:`~lowdose.physics.optics.Optics`. Partial temporal coherence is computed as
the paper did, by explicit averaging: the intensity is averaged over a Gauss–Hermite
set of defoci spread by ``focal_spread_nm`` (``focal_nodes = 0`` selects the cheaper
quasi-coherent temporal envelope on the wave instead, which misrenders thick columns).
The intensity is damped by the image-spread envelope, Fourier-resampled to the
experimental pixel size and scaled so that the vacuum mean equals the dose.

abTEM runs eagerly on numpy (``dask.lazy = False`` in ``abtem.config``); this
module never imports dask or torch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import fft as sfft
from scipy import ndimage

from lowdose.physics.optics import Optics
from lowdose.physics.structures import Model, StructureParams, build_model

FloatArray = npt.NDArray[np.floating]
ComplexArray = npt.NDArray[np.complexfloating]

CONTRAST_CLASSES = ("white", "black", "mixed")
VACUUM_DISTANCE_A = 6.0
"""Pixels farther than this (Å, projected) from every atom count as vacuum."""
COLUMN_RADIUS_A = 0.3
"""Radius (Å) of the disc averaged at each column centre for the contrast label."""
CONTRAST_FRACTION = 0.8
"""Fraction of Pt columns that must be brighter (darker) than vacuum for white (black)."""


@dataclass(frozen=True)
class ExitWave:
    """A multislice exit wave on a periodic square grid (array indexed ``[y, x]``)."""

    array: ComplexArray
    extent_A: float

    @property
    def sampling_A(self) -> float:
        """Grid spacing (Å)."""
        return self.extent_A / self.array.shape[-1]


@dataclass(frozen=True)
class ImageStack:
    """Images of one structure over defocus, with ground truth in image pixels."""

    images: npt.NDArray[np.float32]
    defocus_nm: npt.NDArray[np.float64]
    contrast: list[str]
    pixel_size_A: float
    columns: pd.DataFrame
    """``x_px, y_px, element, n_atoms, surface`` per projected column."""


def exit_wave(
    model: Model,
    optics: Optics,
    gpts: int = 1024,
    slice_thickness_A: float = 2.0,
) -> ExitWave:
    """Run one abTEM plane-wave multislice through ``model``.

    Parameters
    ----------
    model
        The atomic model (its lateral cell must be square).
    optics
        Only ``voltage_kV`` is used here (aberrations are applied later).
    gpts
        Grid points per side of the potential/wave.
    slice_thickness_A
        Multislice slice thickness (Å).
    """
    array = _abtem_exit_wave(model.to_ase(), optics.voltage_kV, gpts, slice_thickness_A)
    # abTEM arrays are indexed [x, y]; images here are [y, x].
    return ExitWave(array=np.ascontiguousarray(array.T), extent_A=float(model.cell_A[0]))


@functools.cache
def cache_abtem_kernels() -> int:
    """Let numba keep abTEM's Lobato potential kernels compiled on disk; return how many.

    abTEM jit-compiles them on first use in every process (≈ 1.7 s here, each simulation
    worker); with numba's file cache (beside abTEM's sources, or in ``NUMBA_CACHE_DIR``)
    a later process loads them in milliseconds. numba keys the cache on the source file
    and the CPU, so an upgraded abTEM or another machine compiles afresh; where no cache
    location is writable the kernels compile in each process, as before.
    """
    try:
        from abtem.parametrizations.functions import lobato
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return 0
    cached = 0
    for kernel in vars(lobato).values():
        if isinstance(kernel, Dispatcher):
            with contextlib.suppress(Exception):  # no writable cache location: compile as before
                kernel.enable_caching()
                cached += 1
    return cached


def _abtem_exit_wave(atoms: object, voltage_kV: float, gpts: int, slice_thickness_A: float) -> ComplexArray:
    """The plane-wave multislice of abTEM through ``atoms`` (array indexed ``[x, y]``), eagerly on numpy."""
    import abtem

    cache_abtem_kernels()

    with abtem.config.set(
        {"dask.lazy": False, "fft": "numpy", "diagnostics.progress_bar": False, "precision": "float32"}
    ):
        potential = abtem.Potential(
            atoms,  # type: ignore[arg-type]
            gpts=gpts,
            slice_thickness=slice_thickness_A,
            projection="infinite",
            parametrization="lobato",
        )
        waves = abtem.PlaneWave(energy=voltage_kV * 1e3).multislice(potential, lazy=False)
        array = waves.array  # type: ignore[union-attr]
        if hasattr(array, "compute"):
            array = array.compute(scheduler="synchronous")
    out: ComplexArray = np.asarray(array)
    return out


def warm_up_abtem() -> float:
    """Run a one-atom multislice through the same abTEM path as :func:`exit_wave`; return seconds.

    abTEM compiles its potential kernels with numba on first use in a process
    (seconds); doing it on a tiny grid first makes the first real structure cost
    what every other one costs. Cheap when already warm (milliseconds).
    """
    import time

    from ase import Atoms

    start = time.perf_counter()
    atoms = Atoms(
        "PtCeO", positions=[(2.0, 2.0, 1.0), (4.0, 4.0, 3.0), (6.0, 6.0, 5.0)], cell=(8.0, 8.0, 6.0)
    )
    _abtem_exit_wave(atoms, 300.0, 32, 2.0)
    return time.perf_counter() - start


def _spatial_frequencies(n: int, sampling_A: float) -> FloatArray:
    k = np.fft.fftfreq(n, d=sampling_A)
    return np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)


def transfer_function(q: FloatArray, defocus_nm: float, optics: Optics) -> ComplexArray:
    """Coherent transfer function with temporal and spatial envelopes at ``|q|`` (1/Å).

    The temporal envelope is the quasi-coherent one (``focal_spread_nm`` as an
    envelope on the wave) whatever ``optics.focal_nodes`` says; :func:`image_stack`
    averages explicitly over defocus instead when ``focal_nodes > 0``.
    """
    lam = optics.wavelength_A
    c1 = 10.0 * defocus_nm
    c3 = 1e4 * optics.C3_um
    c5 = 1e7 * optics.C5_mm
    alpha = lam * q
    chi = 2 * np.pi / lam * (0.5 * c1 * alpha**2 + 0.25 * c3 * alpha**4 + c5 * alpha**6 / 6.0)
    delta = 10.0 * optics.focal_spread_nm
    temporal = np.exp(-0.5 * (np.pi * lam * delta * q**2) ** 2)
    theta = 1e-3 * optics.convergence_mrad
    gradient = c1 * alpha + c3 * alpha**3 + c5 * alpha**5
    spatial = np.exp(-((np.pi * theta / lam) ** 2) * gradient**2)
    out: ComplexArray = np.exp(-1j * chi) * temporal * spatial
    return out


class _TransferTerms:
    """:func:`transfer_function` on one ``q`` grid for many defoci: the defocus-free terms once.

    ``χ`` is linear in ``C1`` and the spatial envelope's gradient is affine in it, so
    per defocus only a multiply–add, one exponential and a cosine/sine remain.
    Returns complex64 (as :func:`image_stack` uses it); same values up to rounding.
    """

    def __init__(self, q: FloatArray, optics: Optics, temporal_envelope: bool = True) -> None:
        lam = optics.wavelength_A
        c3 = 1e4 * optics.C3_um
        c5 = 1e7 * optics.C5_mm
        alpha = lam * q
        self.alpha = alpha
        self.chi_per_c1 = 2 * np.pi / lam * 0.5 * alpha**2
        self.chi_fixed = 2 * np.pi / lam * (0.25 * c3 * alpha**4 + c5 * alpha**6 / 6.0)
        self.gradient_fixed = c3 * alpha**3 + c5 * alpha**5
        delta = 10.0 * optics.focal_spread_nm
        # None: temporal coherence is averaged explicitly over defocus by the caller
        self.temporal = np.exp(-0.5 * (np.pi * lam * delta * q**2) ** 2) if temporal_envelope else None
        theta = 1e-3 * optics.convergence_mrad
        self.spatial_scale = (np.pi * theta / lam) ** 2

    def __call__(self, defocus_nm: float) -> ComplexArray:
        c1 = 10.0 * defocus_nm
        chi = self.chi_per_c1 * c1
        chi += self.chi_fixed
        gradient = self.alpha * c1
        gradient += self.gradient_fixed
        gradient *= gradient
        gradient *= -self.spatial_scale
        envelope = np.exp(gradient, out=gradient)
        if self.temporal is not None:
            envelope *= self.temporal
        out = np.empty(chi.shape, dtype=np.complex64)
        out.real = np.cos(chi) * envelope
        out.imag = -np.sin(chi) * envelope
        return out


def fourier_resample(image: FloatArray, n_out: int, damping: FloatArray | None = None) -> FloatArray:
    """Band-limited resampling of a periodic square image to ``n_out`` pixels per side.

    ``damping`` (optional, ``n_out × n_out`` in numpy FFT order) multiplies the
    resampled spectrum, e.g. the image-spread envelope.
    """
    n_in = image.shape[-1]
    spec = sfft.fft2(image)
    out = np.zeros((n_out, n_out), dtype=spec.dtype)
    m = min(n_in, n_out)
    # The centred m × m block of frequencies -m//2 … m - m//2 - 1, copied between the two
    # unshifted (numpy FFT order) spectra: the same as fftshift, crop/pad, ifftshift.
    freq = np.arange(-(m // 2), m - m // 2)
    src, dst = freq % n_in, freq % n_out
    out[np.ix_(dst, dst)] = spec[np.ix_(src, src)]
    if damping is not None:
        out *= damping
    result: FloatArray = sfft.ifft2(out).real * (n_out / n_in) ** 2
    return result


def vacuum_mask(positions_A: FloatArray, extent_A: float, n: int) -> npt.NDArray[np.bool_]:
    """Pixels (``[y, x]``) farther than :data:`VACUUM_DISTANCE_A` from every atom, periodically."""
    pixel = extent_A / n
    occupied = np.zeros((n, n), dtype=bool)
    ij = np.floor(positions_A[:, [1, 0]] / pixel).astype(int) % n
    occupied[ij[:, 0], ij[:, 1]] = True
    # Periodic images matter only within the vacuum distance: wrap-pad by that much (plus a
    # pixel) instead of tiling 3 × 3, the same mask from a much smaller distance transform.
    margin = min(n, int(np.ceil(VACUUM_DISTANCE_A / pixel)) + 1)
    padded = np.pad(occupied, margin, mode="wrap")
    dist = ndimage.distance_transform_edt(~padded)[margin : margin + n, margin : margin + n] * pixel
    mask: npt.NDArray[np.bool_] = dist > VACUUM_DISTANCE_A
    return mask


def column_intensities(image: FloatArray, x_px: FloatArray, y_px: FloatArray, radius_px: float) -> FloatArray:
    """Mean image value in a disc of ``radius_px`` around each (x_px, y_px)."""
    r = int(np.ceil(radius_px))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    out = np.empty(len(x_px))
    n_y, n_x = image.shape
    for k, (x, y) in enumerate(zip(x_px, y_px, strict=True)):
        cx, cy = round(float(x)), round(float(y))
        sel = (dx + cx - x) ** 2 + (dy + cy - y) ** 2 <= radius_px**2
        out[k] = image[(dy[sel] + cy) % n_y, (dx[sel] + cx) % n_x].mean()
    return out


class _ColumnDiscs:
    """:func:`column_intensities` for many images of one grid: the disc pixels found once."""

    def __init__(self, shape: tuple[int, int], x_px: FloatArray, y_px: FloatArray, radius_px: float) -> None:
        r = int(np.ceil(radius_px))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        n_y, n_x = shape
        flat, owner = [], []
        for k, (x, y) in enumerate(zip(x_px, y_px, strict=True)):
            cx, cy = round(float(x)), round(float(y))
            sel = (dx + cx - x) ** 2 + (dy + cy - y) ** 2 <= radius_px**2
            flat.append(((dy[sel] + cy) % n_y) * n_x + (dx[sel] + cx) % n_x)
            owner.append(np.full(int(sel.sum()), k))
        self.n = len(x_px)
        self.flat = np.concatenate(flat) if flat else np.zeros(0, dtype=int)
        self.owner = np.concatenate(owner) if owner else np.zeros(0, dtype=int)
        self.count = np.bincount(self.owner, minlength=self.n)

    def means(self, image: FloatArray) -> FloatArray:
        """Mean of ``image`` in every disc."""
        sums = np.bincount(self.owner, weights=image.ravel()[self.flat], minlength=self.n)
        out: FloatArray = sums / np.maximum(self.count, 1)
        return out


def contrast_class(column_values: FloatArray, vacuum: float) -> str:
    """``white``/``black``/``mixed`` from Pt column intensities relative to the vacuum level."""
    if len(column_values) == 0:
        return "mixed"
    if np.mean(column_values > vacuum) >= CONTRAST_FRACTION:
        return "white"
    if np.mean(column_values < vacuum) >= CONTRAST_FRACTION:
        return "black"
    return "mixed"


def focal_average(optics: Optics) -> list[tuple[float, float]] | None:
    """Defocus offsets (nm) and weights of the explicit focal-spread average, or None.

    Gauss–Hermite nodes of a Gaussian of standard deviation ``focal_spread_nm``
    (``focal_nodes`` of them, weights summing to 1); None when ``focal_nodes`` is 0
    or there is no spread (then the quasi-coherent envelope, or nothing, applies).
    """
    if optics.focal_nodes <= 0 or optics.focal_spread_nm <= 0:
        return None
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(optics.focal_nodes))
    weights = weights / weights.sum()
    return [(float(optics.focal_spread_nm * z), float(w)) for z, w in zip(nodes, weights, strict=True)]


def image_stack(
    wave: ExitWave,
    model: Model,
    defocus_nm: Sequence[float],
    optics: Optics,
    pixel_size_A: float = 0.061,
    dose_e_per_px: float = 0.45,
) -> ImageStack:
    """All defocus images of one exit wave at the experimental pixel size and dose.

    Returns float32 expected counts per pixel (vacuum mean = ``dose_e_per_px``),
    the contrast label of each image and the ground-truth columns in pixels of
    the output grid (pixel ``i`` is centred at ``i * pixel_size``).
    """
    n_sim = wave.array.shape[-1]
    n_out = max(8, round(wave.extent_A / pixel_size_A))
    actual_pixel = wave.extent_A / n_out
    q = _spatial_frequencies(n_sim, wave.sampling_A)
    spectrum = sfft.fft2(wave.array.astype(np.complex64))
    q_out = _spatial_frequencies(n_out, actual_pixel)
    spread = np.exp(-2 * np.pi**2 * (1e-2 * optics.vibration_pm) ** 2 * q_out**2)
    mask = vacuum_mask(model.positions, wave.extent_A, n_out)
    if not mask.any():
        raise ValueError("the model leaves no vacuum to scale the dose against")
    cols = model.columns
    x_px = cols["x_A"].to_numpy() / actual_pixel
    y_px = cols["y_A"].to_numpy() / actual_pixel
    is_pt = (cols["element"] == "Pt").to_numpy()

    focal = focal_average(optics)
    ctf_of = _TransferTerms(q, optics, temporal_envelope=focal is None)
    discs = _ColumnDiscs((n_out, n_out), x_px[is_pt], y_px[is_pt], COLUMN_RADIUS_A / actual_pixel)
    images = np.empty((len(defocus_nm), n_out, n_out), dtype=np.float32)
    labels = []
    for k, df in enumerate(defocus_nm):
        intensity = np.zeros((n_sim, n_sim), dtype=np.float32)
        for offset_nm, weight in focal or [(0.0, 1.0)]:
            psi = sfft.ifft2(spectrum * ctf_of(float(df) + offset_nm))
            intensity += np.float32(weight) * (psi.real**2 + psi.imag**2)
        out = fourier_resample(intensity, n_out, damping=spread)
        out *= dose_e_per_px / out[mask].mean()
        np.maximum(out, 0.0, out=out)
        images[k] = out
        labels.append(contrast_class(discs.means(out), dose_e_per_px))
    columns = pd.DataFrame(
        {
            "x_px": x_px.astype(np.float32),
            "y_px": y_px.astype(np.float32),
            "element": cols["element"].to_numpy(),
            "n_atoms": cols["n_atoms"].to_numpy(np.int32),
            "surface": cols["surface"].to_numpy(bool),
        }
    )
    return ImageStack(
        images=images,
        defocus_nm=np.asarray(defocus_nm, dtype=np.float64),
        contrast=labels,
        pixel_size_A=actual_pixel,
        columns=columns,
    )


def simulate_structure(
    params: StructureParams,
    defocus_nm: Sequence[float],
    optics: Optics | None = None,
    *,
    gpts: int = 1024,
    slice_thickness_A: float = 2.0,
    pixel_size_A: float = 0.061,
    dose_e_per_px: float = 0.45,
) -> ImageStack:
    """Build one model, run its multislice once, and image it at every defocus.

    This is the per-structure kernel the grid runner maps over a cluster; it is
    a pure function of its arguments (the structure seed is in ``params``).
    """
    optics = optics or Optics()
    model = build_model(params)
    wave = exit_wave(model, optics, gpts=gpts, slice_thickness_A=slice_thickness_A)
    return image_stack(
        wave, model, defocus_nm, optics, pixel_size_A=pixel_size_A, dose_e_per_px=dose_e_per_px
    )
