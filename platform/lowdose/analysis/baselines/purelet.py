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
    # Over the last two axes; leading axes are a batch of patches.
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, e = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    s = a + b + c + e
    return s, (a + b) - (c + e), (a + c) - (b + e), (a + e) - (b + c)


def _haar_inverse(s: FloatArray, dh: FloatArray, dv: FloatArray, dd: FloatArray) -> FloatArray:
    out = np.empty((*s.shape[:-2], 2 * s.shape[-2], 2 * s.shape[-1]))
    out[..., 0::2, 0::2] = (s + dh + dv + dd) / 4.0
    out[..., 0::2, 1::2] = (s + dh - dv - dd) / 4.0
    out[..., 1::2, 0::2] = (s - dh + dv - dd) / 4.0
    out[..., 1::2, 1::2] = (s - dh - dv + dd) / 4.0
    return out


def _basis(d: FloatArray, s: FloatArray, taus: tuple[float, ...]) -> FloatArray:
    # (K, ...) LET basis evaluated at (d, s); s + 1 keeps the variance proxy positive at s = 0, −1.
    variance = np.maximum(s + 1.0, 1.0)
    rows = [d] + [d * np.exp(-(d**2) / (2.0 * tau**2 * variance)) for tau in taus]
    return np.stack(rows)


def pure_let_weights(
    d: FloatArray, s: FloatArray, taus: tuple[float, ...] = DEFAULT_TAUS, *, batched: bool = False
) -> FloatArray:
    """LET weights minimising PURE (unnormalised Haar details ``d``, their sums ``s``).

    One fit over all coefficients (weights ``(K,)``), or with ``batched=True`` one fit per
    row of ``(N, m)`` arrays (weights ``(N, K)``).
    """
    d2 = np.asarray(d, dtype=np.float64).reshape(d.shape[0] if batched else 1, -1)
    s2 = np.asarray(s, dtype=np.float64).reshape(d2.shape)
    phi = _basis(d2, s2, taus)  # (K, N, m)
    phi_minus = _basis(d2 - 1.0, s2 - 1.0, taus)
    phi_plus = _basis(d2 + 1.0, s2 - 1.0, taus)
    gram = np.einsum("knm,lnm->nkl", phi, phi)
    rhs = 0.5 * ((s2 + d2) * phi_minus - (s2 - d2) * phi_plus).sum(axis=2).T  # (N, K)
    # pinv: an all-zero patch (no counts) has a singular Gram matrix; any weights do there.
    weights = np.einsum("nkl,nl->nk", np.linalg.pinv(gram), rhs)
    return np.asarray(weights if batched else weights[0], dtype=np.float64)


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
    """PURE-LET denoise square images whose side is a power of two (counts in, rates out).

    ``counts`` is one ``(n, n)`` image or a batch ``(N, n, n)``; every image gets its own
    PURE-optimal weights.
    """
    x = np.asarray(counts, dtype=np.float64)
    n = x.shape[-1]
    if x.ndim not in (2, 3) or x.shape[-2] != n or n & (n - 1) or n < 2:
        raise LowdoseInputError(
            f"counts: expected square images with a power-of-two side, got shape {x.shape}"
        )
    single = x.ndim == 2
    batch = x[None] if single else x
    max_levels = int(math.log2(n))
    levels = max_levels if levels is None else min(levels, max_levels)
    details: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    sums: list[FloatArray] = []
    low = batch
    for _ in range(levels):
        s, dh, dv, dd = _haar_forward(low)
        sums.append(s)
        details.append((dh, dv, dd))
        low = s
    n_weights = len(taus) + 1
    n_batch = batch.shape[0]
    for level in reversed(range(levels)):
        s = sums[level]
        bands = details[level]
        stacked_d = np.stack(bands, axis=1)  # (N, 3, h, w)
        stacked_s = np.broadcast_to(s[:, None], stacked_d.shape)
        if stacked_d[0].size >= MIN_COEFFICIENTS_PER_WEIGHT * n_weights:
            w = pure_let_weights(
                stacked_d.reshape(n_batch, -1), stacked_s.reshape(n_batch, -1), taus, batched=True
            )
        else:
            w = np.tile(np.r_[1.0, np.zeros(len(taus))], (n_batch, 1))
        shrunk = np.einsum("nk,knbhw->nbhw", w, _basis(stacked_d, stacked_s, taus))
        # Rebuild from the (denoised) coarser sums: `low` holds the estimate of `s` here.
        low = _haar_inverse(low, shrunk[:, 0], shrunk[:, 1], shrunk[:, 2])
    return low[0] if single else low


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
    padded = np.pad(x, ((0, pad_y), (0, pad_x)), mode="symmetric") if pad_y or pad_x else x
    height, width = padded.shape
    origins = [
        (y0, x0) for y0 in _starts(height, patch_px, stride_px) for x0 in _starts(width, patch_px, stride_px)
    ]
    patches = np.stack([padded[y0 : y0 + patch_px, x0 : x0 + patch_px] for y0, x0 in origins])
    # Shifts that are multiples of 2**level leave that level's Haar grid in place; fixed
    # pseudo-random 2-D shifts decorrelate the block artefacts of every level.
    spin_rng = np.random.default_rng(20110301)
    shifts = [(0, 0)] + [
        (int(a), int(b)) for a, b in spin_rng.integers(0, patch_px, size=(cycle_spins - 1, 2))
    ]
    estimate = np.zeros_like(patches)
    for shift in shifts:
        rolled = np.roll(patches, shift, axis=(1, 2))
        estimate += np.roll(pure_let_square(rolled, levels, taus), (-shift[0], -shift[1]), axis=(1, 2))
    estimate /= len(shifts)
    out = np.zeros_like(padded)
    weight = np.zeros_like(padded)
    for (y0, x0), patch in zip(origins, estimate, strict=True):
        out[y0 : y0 + patch_px, x0 : x0 + patch_px] += patch
        weight[y0 : y0 + patch_px, x0 : x0 + patch_px] += 1.0
    return (out / weight)[: x.shape[0], : x.shape[1]]


def _starts(size: int, patch: int, stride: int) -> list[int]:
    # Patch origins covering [0, size); the last one shifts back to end at the edge.
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts
