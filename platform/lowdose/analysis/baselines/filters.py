"""Classical linear and rank filters used as denoising baselines (Vincent et al. 2021, Table 1).

Adaptive Wiener filter, Fourier low-pass, Gaussian blur (fixed or tuned σ), 3×3 median
and Fourier spot-mask (Bragg-peak) filtering. Inputs are raw counts per pixel; outputs are
estimated expected counts per pixel on the same grid (float64).

numpy/scipy/scikit-image only: never import dask or torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal
from skimage.feature import peak_local_max

from lowdose.errors import LowdoseInputError

FloatArray = npt.NDArray[np.float64]


def _image(x: npt.ArrayLike, name: str = "image") -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise LowdoseInputError(f"{name}: expected a 2-D image, got shape {arr.shape}")
    return arr


def disc_footprint(radius_px: float) -> npt.NDArray[np.bool_]:
    """Boolean disc of the given radius (pixels), centred in a ``(2r+1)²`` square."""
    if radius_px < 0:
        raise LowdoseInputError(f"radius_px: expected >= 0, got {radius_px}")
    r = int(np.floor(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(yy**2 + xx**2 <= radius_px**2)


def adaptive_wiener(
    counts: npt.ArrayLike, radius_px: float = 13.0, noise_variance: float | str | None = None
) -> FloatArray:
    """Adaptive (local statistics) Wiener filter of Lee (1980) / Lim (1990), as MATLAB's ``wiener2``.

    With local mean ``μ`` and variance ``σ²`` in a circular window and noise variance ``ν``:
    ``out = μ + max(σ² − ν, 0) / max(σ², ν) · (x − μ)``.

    Parameters
    ----------
    counts
        Raw counts.
    radius_px
        Radius of the circular window (13 px in the paper).
    noise_variance
        ``None``: the mean of the local variances (``wiener2``'s estimate); ``"poisson"``:
        the local mean (the variance of Poisson noise); or a number.
    """
    x = _image(counts, "counts")
    footprint = disc_footprint(radius_px).astype(np.float64)
    footprint /= footprint.sum()
    mean = _disc_mean(x, footprint)
    var = np.maximum(_disc_mean(x**2, footprint) - mean**2, 0.0)
    if noise_variance is None:
        nu: FloatArray | float = float(var.mean())
    elif noise_variance == "poisson":
        nu = np.maximum(mean, 0.0)
    elif isinstance(noise_variance, int | float):
        nu = float(noise_variance)
    else:
        raise LowdoseInputError(
            f"noise_variance: expected None, 'poisson' or a number, got {noise_variance!r}"
        )
    gain = np.maximum(var - nu, 0.0) / np.maximum(np.maximum(var, nu), 1e-12)
    return np.asarray(mean + gain * (x - mean), dtype=np.float64)


def _disc_mean(x: FloatArray, footprint: FloatArray) -> FloatArray:
    # Same as ndimage.correlate(x, footprint, mode="reflect") (the footprint is symmetric),
    # via FFT: a 27×27 window costs 729 multiply-adds per pixel spatially.
    r = footprint.shape[0] // 2
    padded = np.pad(x, r, mode="symmetric")
    return np.asarray(signal.fftconvolve(padded, footprint, mode="valid"), dtype=np.float64)


def _frequencies_per_A(shape: tuple[int, ...], pixel_size_A: float) -> FloatArray:
    if not pixel_size_A > 0:
        raise LowdoseInputError(f"pixel_size_A: expected a positive number, got {pixel_size_A}")
    qy = np.fft.fftfreq(shape[0], d=pixel_size_A)
    qx = np.fft.fftfreq(shape[1], d=pixel_size_A)
    return np.asarray(np.hypot(qy[:, None], qx[None, :]))


def fourier_lowpass(counts: npt.ArrayLike, pixel_size_A: float, cutoff_per_A: float = 1.35) -> FloatArray:
    """Ideal (hard circular) Fourier low-pass filter at a spatial frequency in Å⁻¹.

    The paper's Table 1 used 1.35 Å⁻¹; the 0.74 Å information limit is 1/0.74 ≈ 1.35 Å⁻¹
    too. The image is treated as periodic (FFT); the zero frequency (mean) is kept.
    """
    x = _image(counts, "counts")
    if not cutoff_per_A > 0:
        raise LowdoseInputError(f"cutoff_per_A: expected a positive frequency, got {cutoff_per_A}")
    keep = _frequencies_per_A(x.shape, pixel_size_A) <= cutoff_per_A
    return np.asarray(np.fft.ifft2(np.fft.fft2(x) * keep).real, dtype=np.float64)


def gaussian_blur(counts: npt.ArrayLike, sigma_px: float = 1.0) -> FloatArray:
    """Gaussian blur with standard deviation ``sigma_px`` (reflecting borders).

    The linear low-pass baseline of Vincent et al. (2021, Table 1): σ = 1 px as a fixed
    setting, and σ tuned on validation data (:func:`tune_gaussian_sigma`), which at this
    dose is a strong baseline.
    """
    x = _image(counts, "counts")
    if sigma_px < 0:
        raise LowdoseInputError(f"sigma_px: expected >= 0, got {sigma_px}")
    return np.asarray(ndimage.gaussian_filter(x, sigma_px, mode="reflect"), dtype=np.float64)


def tune_gaussian_sigma(
    noisy_images: Sequence[npt.ArrayLike],
    clean_images: Sequence[npt.ArrayLike],
    sigmas_px: Sequence[float] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0),
    data_range: float = 1.0,
) -> tuple[float, dict[float, float]]:
    """Choose the Gaussian σ with the best mean PSNR on validation pairs.

    The paper notes a well-chosen σ (≈ 8 px at 0.061 Å/px) already reaches ~30 dB, so a
    tuned Gaussian belongs in every comparison.

    Returns
    -------
    best_sigma_px, mean_psnr_by_sigma
        The winning σ and the mean PSNR (dB) of every σ tried.
    """
    from lowdose.analysis.metrics import psnr

    if len(noisy_images) != len(clean_images) or not noisy_images:
        raise LowdoseInputError("noisy_images, clean_images: expected equally many (≥ 1) validation images")
    if not sigmas_px:
        raise LowdoseInputError("sigmas_px: expected at least one σ")
    scores = {
        float(sigma): float(
            np.mean(
                [
                    psnr(gaussian_blur(n, sigma), c, data_range=data_range)
                    for n, c in zip(noisy_images, clean_images, strict=True)
                ]
            )
        )
        for sigma in sigmas_px
    }
    best = max(scores, key=lambda k: scores[k])
    return best, scores


def median_filter(counts: npt.ArrayLike, size_px: int = 3) -> FloatArray:
    """Median filter over a ``size_px``×``size_px`` square (3×3 in the paper's figures).

    Tukey's running median (Tukey, *Exploratory Data Analysis*, 1977) in two dimensions
    (Huang, Yang & Tang, IEEE Trans. ASSP 27, 13–18, 1979). On counts of ~0.45 per pixel
    most 3×3 medians are 0, which is why it scores poorly at this dose.
    """
    x = _image(counts, "counts")
    if size_px < 1:
        raise LowdoseInputError(f"size_px: expected >= 1, got {size_px}")
    return np.asarray(ndimage.median_filter(x, size=size_px, mode="reflect"), dtype=np.float64)


def bragg_spot_mask(
    counts: npt.ArrayLike,
    pixel_size_A: float,
    *,
    spot_radius_per_A: float = 0.05,
    min_frequency_per_A: float = 0.2,
    max_frequency_per_A: float = 1.35,
    max_spots: int = 40,
    threshold_rel: float = 3.0,
) -> npt.NDArray[np.bool_]:
    """Mask of the Bragg spots of a lattice image's power spectrum (plus the zero frequency).

    Spots are local maxima of the smoothed power spectrum between ``min_frequency_per_A``
    and ``max_frequency_per_A`` whose smoothed power exceeds ``threshold_rel`` × the median
    (unsmoothed) power in that band (the flat shot-noise floor), at most ``max_spots`` of
    them; each keeps a disc of radius ``spot_radius_per_A``. The low-frequency disc inside
    ``min_frequency_per_A`` is always kept (the particle's overall shape and the mean).
    """
    x = _image(counts, "counts")
    q = _frequencies_per_A(x.shape, pixel_size_A)
    power = np.abs(np.fft.fft2(x - x.mean())) ** 2
    # Smooth on the periodic grid so a spot spread over a few bins counts as one.
    smooth = np.fft.fftshift(ndimage.gaussian_filter(power, 1.0, mode="wrap"))
    band = np.fft.fftshift((q >= min_frequency_per_A) & (q <= max_frequency_per_A))
    if not band.any():
        raise LowdoseInputError(
            "bragg_spot_mask: the frequency band is empty for this image size and pixel size"
        )
    # The unsmoothed median is the shot-noise floor (smoothing would spread strong spots into it).
    floor = float(np.median(np.fft.fftshift(power)[band]))
    peaks = peak_local_max(
        np.where(band, smooth, 0.0),
        min_distance=2,
        threshold_abs=threshold_rel * floor,
        num_peaks=max_spots,
        exclude_border=False,
    )
    df_y = 1.0 / (x.shape[0] * pixel_size_A)
    df_x = 1.0 / (x.shape[1] * pixel_size_A)
    yy, xx = np.indices(x.shape)
    cy, cx = x.shape[0] // 2, x.shape[1] // 2
    mask = np.fft.fftshift(q) < min_frequency_per_A
    for py, px in peaks:
        for sy, sx in ((py, px), (2 * cy - py, 2 * cx - px)):  # a real image's spots come in ± pairs
            mask |= ((yy - sy) * df_y) ** 2 + ((xx - sx) * df_x) ** 2 <= spot_radius_per_A**2
    return np.asarray(np.fft.ifftshift(mask))


def fourier_spot_mask_filter(
    counts: npt.ArrayLike, pixel_size_A: float, mask: npt.ArrayLike | None = None, **mask_options: float
) -> FloatArray:
    """Fourier spot-mask (Bragg filtering): keep only the lattice's reflections.

    The classic HRTEM periodic filter: Fourier transform, keep discs around the Bragg
    spots (and the low frequencies), transform back. It suppresses the shot noise between
    reflections but also anything aperiodic, e.g. surface atoms; the paper shows it as a
    cautionary reference. ``mask`` (unshifted FFT layout) overrides the automatic
    :func:`bragg_spot_mask`; other keyword arguments are passed to it.
    """
    x = _image(counts, "counts")
    if mask is None:
        keep = bragg_spot_mask(x, pixel_size_A, **mask_options)  # type: ignore[arg-type]
    else:
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != x.shape:
            raise LowdoseInputError(f"mask: expected shape {x.shape}, got {keep.shape}")
    return np.asarray(np.fft.ifft2(np.fft.fft2(x) * keep).real, dtype=np.float64)
