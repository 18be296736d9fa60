"""PURE-LET: Poisson-unbiased-risk-optimal thresholding in the unnormalised Haar domain.

After Luisier, Vonesch, Blu & Unser (Signal Processing 90, 415–427, 2010) and Luisier,
Blu & Unser (IEEE TIP 20, 696–708, 2011), written from the papers' equations:

* The unnormalised 2-D Haar transform of a 2×2 block ``[[a, b], [c, e]]`` is the sum
  ``s = a + b + c + e`` and three differences of pair sums, ``d_h = (a+b) − (c+e)``,
  ``d_v = (a+c) − (b+e)``, ``d_d = (a+e) − (b+c)``. Sums of Poisson counts are Poisson,
  so at every scale ``s`` is Poisson and each ``d = g₁ − g₂`` with ``s = g₁ + g₂``.
* Each detail coefficient is replaced by ``θ(d, s) = Σ_k a_k φ_k(d, s)``, a *linear
  expansion of thresholds* (LET): ``φ₀ = d`` and ``φ_k = d·exp(−d² / (2 τ_k² (s + 1)))``,
  smooth shrinkers whose threshold follows the local noise variance (Var d = E s).
  One weight vector per level, shared by its three sub-bands (pooling keeps the fit
  stable on the few coefficients of coarse levels).
* Poisson's identity ``E[λ f(x)] = E[x f(x − 1)]`` gives an unbiased estimate of the
  MSE of the detail estimate (PURE), without the clean image::

      PURE(θ) = Σ [θ(d, s)² − (s + d) θ(d − 1, s − 1) + (s − d) θ(d + 1, s − 1) + d² − s]

  It is quadratic in the LET weights ``a``: ``a = M⁻¹ c`` with ``M_kl = Σ φ_k φ_l`` and
  ``c_k = ½ Σ [(s + d) φ_k(d − 1, s − 1) − (s − d) φ_k(d + 1, s − 1)]`` — a small linear
  system per sub-band. The normalised Haar transform is orthonormal, so minimising each
  sub-band's PURE minimises the image-domain MSE.
* As in Vincent et al. (2021), frames are processed as 128×128 overlapping patches
  (power-of-two sides) averaged where they overlap; cycle spinning (averaging over a few
  circular shifts) reduces the Haar block artefacts further.

The mixed Poisson–Gaussian terms and the inter-scale predictor of the 2011 paper are
not used (counting detectors have no read noise).

numpy only: never import dask or torch here.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lowdose.errors import LowdoseInputError

FloatArray = npt.NDArray[np.float64]

DEFAULT_TAUS: tuple[float, ...] = (2.0,)
"""Thresholds of the LET basis, in units of the local noise standard deviation sqrt(s+1).

More thresholds make the basis nearly collinear and PURE's own noise then dominates
the fit (measured: a 3-term basis lost 1 dB at 4 levels and collapsed at 7)."""
MIN_COEFFICIENTS_PER_WEIGHT = 12
"""Coarse levels with fewer detail coefficients than this × basis size are kept as they are."""


def _haar_forward(x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    a, b = x[0::2, 0::2], x[0::2, 1::2]
    c, e = x[1::2, 0::2], x[1::2, 1::2]
    s = a + b + c + e
    return s, (a + b) - (c + e), (a + c) - (b + e), (a + e) - (b + c)


def _haar_inverse(s: FloatArray, dh: FloatArray, dv: FloatArray, dd: FloatArray) -> FloatArray:
    out = np.empty((2 * s.shape[0], 2 * s.shape[1]))
    out[0::2, 0::2] = (s + dh + dv + dd) / 4.0
    out[0::2, 1::2] = (s + dh - dv - dd) / 4.0
    out[1::2, 0::2] = (s - dh + dv - dd) / 4.0
    out[1::2, 1::2] = (s - dh - dv + dd) / 4.0
    return out


def _basis(d: FloatArray, s: FloatArray, taus: tuple[float, ...]) -> FloatArray:
    # (K, n) LET basis evaluated at (d, s); s + 1 keeps the variance proxy positive at s = 0, −1.
    variance = np.maximum(s + 1.0, 1.0)
    rows = [d] + [d * np.exp(-(d**2) / (2.0 * tau**2 * variance)) for tau in taus]
    return np.stack(rows)


def pure_let_weights(d: FloatArray, s: FloatArray, taus: tuple[float, ...] = DEFAULT_TAUS) -> FloatArray:
    """LET weights minimising PURE for one sub-band (unnormalised Haar details ``d``, sums ``s``)."""
    d = d.ravel()
    s = s.ravel()
    phi = _basis(d, s, taus)
    phi_minus = _basis(d - 1.0, s - 1.0, taus)
    phi_plus = _basis(d + 1.0, s - 1.0, taus)
    gram = phi @ phi.T
    rhs = 0.5 * ((s + d) * phi_minus - (s - d) * phi_plus).sum(axis=1)
    weights, *_ = np.linalg.lstsq(gram, rhs, rcond=None)
    return np.asarray(weights, dtype=np.float64)


def pure_risk(
    d: FloatArray, s: FloatArray, weights: FloatArray, taus: tuple[float, ...] = DEFAULT_TAUS
) -> float:
    """PURE: unbiased estimate of ``Σ (θ(d, s) − E d)²`` for given LET weights."""
    d = d.ravel()
    s = s.ravel()
    theta = weights @ _basis(d, s, taus)
    theta_minus = weights @ _basis(d - 1.0, s - 1.0, taus)
    theta_plus = weights @ _basis(d + 1.0, s - 1.0, taus)
    return float(np.sum(theta**2 - (s + d) * theta_minus + (s - d) * theta_plus + d**2 - s))


def pure_let_square(
    counts: npt.ArrayLike, levels: int | None = None, taus: tuple[float, ...] = DEFAULT_TAUS
) -> FloatArray:
    """PURE-LET denoise one square image whose side is a power of two (counts in, rate out)."""
    x = np.asarray(counts, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != n or n & (n - 1) or n < 2:
        raise LowdoseInputError(
            f"counts: expected a square image with a power-of-two side, got shape {x.shape}"
        )
    max_levels = int(math.log2(n))
    levels = max_levels if levels is None else min(levels, max_levels)
    details: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    sums: list[FloatArray] = []
    low = x
    for _ in range(levels):
        s, dh, dv, dd = _haar_forward(low)
        sums.append(s)
        details.append((dh, dv, dd))
        low = s
    n_weights = len(taus) + 1
    for level in reversed(range(levels)):
        s = sums[level]
        bands = details[level]
        pooled_d = np.concatenate([d.ravel() for d in bands])
        if pooled_d.size >= MIN_COEFFICIENTS_PER_WEIGHT * n_weights:
            w = pure_let_weights(pooled_d, np.tile(s.ravel(), len(bands)), taus)
        else:
            w = np.r_[1.0, np.zeros(len(taus))]
        shrunk = [(w @ _basis(d.ravel(), s.ravel(), taus)).reshape(d.shape) for d in bands]
        # Rebuild from the (denoised) coarser sums: `low` holds the estimate of `s` here.
        low = _haar_inverse(low, shrunk[0], shrunk[1], shrunk[2])
    return low


def pure_let(
    counts: npt.ArrayLike,
    *,
    patch_px: int = 128,
    stride_px: int = 64,
    levels: int | None = None,
    cycle_spins: int = 8,
    taus: tuple[float, ...] = DEFAULT_TAUS,
) -> FloatArray:
    """PURE-LET denoising of a Poisson count image (Luisier et al. 2010, 2011).

    Parameters
    ----------
    counts
        Raw counts (2-D).
    patch_px
        Side of the square patches (a power of two; 128 as in Vincent et al. 2021).
    stride_px
        Step between patches (``patch_px // 2``: each pixel is covered by up to 4 patches).
    levels
        Haar levels per patch (default: all, log2(patch_px)).
    cycle_spins
        Number of circular shifts averaged per patch (1 = none; the shifts are fixed
        pseudo-random, so the result is deterministic).
    taus
        LET thresholds (units of the local noise standard deviation).

    Returns
    -------
    numpy.ndarray
        The estimated expected counts, float64, same shape as ``counts``.
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2:
        raise LowdoseInputError(f"counts: expected a 2-D image, got shape {x.shape}")
    if patch_px < 2 or patch_px & (patch_px - 1):
        raise LowdoseInputError(f"patch_px: expected a power of two, got {patch_px}")
    if not 0 < stride_px <= patch_px:
        raise LowdoseInputError(f"stride_px: expected 0 < stride <= patch, got {stride_px}")
    if cycle_spins < 1:
        raise LowdoseInputError(f"cycle_spins: expected >= 1, got {cycle_spins}")
    pad_y, pad_x = max(0, patch_px - x.shape[0]), max(0, patch_px - x.shape[1])
    padded = np.pad(x, ((0, pad_y), (0, pad_x)), mode="reflect") if pad_y or pad_x else x
    height, width = padded.shape
    out = np.zeros_like(padded)
    weight = np.zeros_like(padded)
    starts_y = _starts(height, patch_px, stride_px)
    starts_x = _starts(width, patch_px, stride_px)
    # Shifts that are multiples of 2**level leave that level's Haar grid in place; fixed
    # pseudo-random 2-D shifts decorrelate the block artefacts of every level.
    spin_rng = np.random.default_rng(20110301)
    shifts = [(0, 0)] + [
        (int(a), int(b)) for a, b in spin_rng.integers(0, patch_px, size=(cycle_spins - 1, 2))
    ]
    for y0 in starts_y:
        for x0 in starts_x:
            patch = padded[y0 : y0 + patch_px, x0 : x0 + patch_px]
            acc = np.zeros_like(patch)
            for shift in shifts:
                rolled = np.roll(patch, shift, axis=(0, 1))
                acc += np.roll(pure_let_square(rolled, levels, taus), (-shift[0], -shift[1]), axis=(0, 1))
            out[y0 : y0 + patch_px, x0 : x0 + patch_px] += acc / len(shifts)
            weight[y0 : y0 + patch_px, x0 : x0 + patch_px] += 1.0
    return (out / weight)[: x.shape[0], : x.shape[1]]


def _starts(size: int, patch: int, stride: int) -> list[int]:
    # Patch origins covering [0, size); the last one shifts back to end at the edge.
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts
