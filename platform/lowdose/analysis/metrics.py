"""Image-quality metrics with the paper's conventions: PSNR and SSIM.

Images are in counts per pixel at the nominal dose (0.45 e/px in vacuum) and the data
range is fixed at 1.0 count, not the image maximum, so a raw noisy frame scores ≈ 3.5 dB
(the authors' code). Denoised outputs may be clipped to [0, 1] by the caller; the raw
image is scored unclipped. SSIM is scikit-image's ``structural_similarity`` with the
default 7×7 window.

numpy/scikit-image only: never import dask or torch here.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from skimage.metrics import structural_similarity

from lowdose.errors import LowdoseInputError


def _pair(estimate: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.shape != ref.shape:
        raise LowdoseInputError(f"estimate, reference: expected one shape, got {est.shape} and {ref.shape}")
    return est, ref


def psnr(estimate: npt.ArrayLike, reference: npt.ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10·log10(data_range² / MSE)`` in dB.

    Parameters
    ----------
    estimate
        Denoised (or raw) image, counts per pixel.
    reference
        The clean image (expected counts per pixel).
    data_range
        Fixed data range; 1.0 count is the paper's convention.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the images are identical.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.full((4, 4), 0.5), np.full((4, 4), 0.6)), 6)
    20.0
    """
    est, ref = _pair(estimate, reference)
    mse = float(np.mean((est - ref) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(estimate: npt.ArrayLike, reference: npt.ArrayLike, data_range: float = 1.0) -> float:
    """Structural similarity (scikit-image, default window) with a fixed data range.

    The arguments are symmetric in SSIM; images must be at least 7×7.
    """
    est, ref = _pair(estimate, reference)
    if est.ndim != 2 or min(est.shape) < 7:
        raise LowdoseInputError(
            f"estimate: expected a 2-D image of at least 7×7 pixels, got shape {est.shape}"
        )
    return float(structural_similarity(est, ref, data_range=data_range))
