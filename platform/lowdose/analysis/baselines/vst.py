"""Variance-stabilised Gaussian denoisers for Poisson counts: Anscombe + NLM, Anscombe + BM3D.

The Anscombe transform turns Poisson counts into approximately unit-variance Gaussian
data; a Gaussian denoiser is applied, and the exact unbiased inverse of Mäkitalo & Foi
(2011, :func:`lowdose.physics.noise.inverse_anscombe`) maps the result back to expected
counts. At 0.45 counts/px the stabilisation is poor (most pixels are 0 or 1), which is
why these baselines lag in the paper's Table 1.

numpy/scikit-image/bm3d only: never import dask or torch here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from skimage.restoration import denoise_nl_means

from lowdose.errors import LowdoseInputError
from lowdose.physics.noise import anscombe, inverse_anscombe

FloatArray = npt.NDArray[np.float64]


def _counts(x: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise LowdoseInputError(f"counts: expected a 2-D image, got shape {arr.shape}")
    return arr


def vst_nlm(
    counts: npt.ArrayLike,
    *,
    patch_size_px: int = 7,
    patch_distance_px: int = 11,
    h: float = 0.8,
    sigma: float = 1.0,
) -> FloatArray:
    """Anscombe VST + non-local means (Buades, Coll & Morel 2005; scikit-image's fast mode).

    Parameters
    ----------
    counts
        Raw counts.
    patch_size_px, patch_distance_px
        NLM patch side and search radius.
    h
        Filtering strength in units of the stabilised noise (σ = 1 after Anscombe).
    sigma
        Noise standard deviation after the transform (1 for ideal stabilisation).
    """
    stabilised = anscombe(_counts(counts))
    denoised = denoise_nl_means(
        stabilised,
        patch_size=patch_size_px,
        patch_distance=patch_distance_px,
        h=h * sigma,
        sigma=sigma,
        fast_mode=True,
        preserve_range=True,
    )
    return np.asarray(inverse_anscombe(denoised), dtype=np.float64)


def vst_bm3d(counts: npt.ArrayLike, *, sigma: float = 1.0, profile: str = "np") -> FloatArray:
    """Anscombe VST + BM3D (Dabov et al. 2007; the ``bm3d`` package of Mäkinen et al. 2020).

    Parameters
    ----------
    counts
        Raw counts.
    sigma
        Noise standard deviation after the transform (1 for ideal stabilisation).
    profile
        ``bm3d`` profile name (``"np"`` normal, ``"refilter"``, ``"vn"``, ...).

    Raises
    ------
    ImportError
        When the optional ``bm3d`` package is missing (it is in the ``[dev]`` extra).
    """
    try:
        import bm3d
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "vst_bm3d needs the 'bm3d' package: pip install 'lowdose[dev]' or pip install bm3d"
        ) from err
    stabilised = anscombe(_counts(counts))
    denoised = np.asarray(bm3d.bm3d(stabilised, sigma_psd=sigma, profile=profile), dtype=np.float64)
    return np.asarray(inverse_anscombe(denoised.reshape(stabilised.shape)), dtype=np.float64)
