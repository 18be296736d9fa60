"""Classical denoising baselines of the paper's Table 1 (numpy kernels, counts in, rates out).

This package never imports dask or torch.
"""

from lowdose.analysis.baselines.filters import (
    adaptive_wiener,
    bragg_spot_mask,
    fourier_lowpass,
    fourier_spot_mask_filter,
    gaussian_blur,
    median_filter,
    tune_gaussian_sigma,
)
from lowdose.analysis.baselines.purelet import pure_let
from lowdose.analysis.baselines.vst import vst_bm3d, vst_nlm

__all__ = [
    "adaptive_wiener",
    "bragg_spot_mask",
    "fourier_lowpass",
    "fourier_spot_mask_filter",
    "gaussian_blur",
    "median_filter",
    "pure_let",
    "tune_gaussian_sigma",
    "vst_bm3d",
    "vst_nlm",
]
