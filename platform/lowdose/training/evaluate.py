"""Held-out evaluation of a denoiser against a tuned Gaussian blur, on whole simulated images.

PSNR follows the paper's code: ``10·log10(1 / MSE)`` in counts at the evaluation
dose (data range 1.0 count), estimates clipped to [0, 1]. The Gaussian's σ is
chosen on the validation images, then applied unchanged to the test images.
Noise realisations use fixed seeds, so numbers are reproducible. numpy/scipy/
torch/zarr; never imports dask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage
from torch import nn

from lowdose.physics.noise import poisson_noise
from lowdose.training.sampler import open_clean_array

EVALUATION_STREAM = 2**31 - 2
"""Seed-sequence entry that separates evaluation noise from training and validation."""

GAUSSIAN_SIGMAS_PX = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 14.0, 16.0, 20.0, 24.0)


def psnr_db(estimate: npt.ArrayLike, reference: npt.ArrayLike) -> float:
    """PSNR in dB with data range 1.0 count, ``estimate`` clipped to [0, 1]."""
    est = np.clip(np.asarray(estimate, dtype=np.float64), 0.0, 1.0)
    mse = float(np.mean((est - np.asarray(reference, dtype=np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / max(mse, 1e-12)))


def noisy_pairs(
    store: str,
    images: Sequence[int] | npt.NDArray[np.integer],
    dose_scale: float,
    realisations: int,
    seed: int,
) -> Iterator[tuple[int, npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Yield ``(image, noisy, clean)`` for each image and noise realisation, one image in memory."""
    array = open_clean_array(store)
    for image in np.asarray(images, dtype=np.int64):
        clean = np.maximum(np.asarray(array[int(image)], dtype=np.float32) * np.float32(dose_scale), 0.0)
        for k in range(realisations):
            rng = np.random.default_rng([seed, EVALUATION_STREAM, int(image), k])
            yield int(image), poisson_noise(clean, rng).astype(np.float32), clean


@torch.no_grad()
def denoise_image(model: nn.Module, noisy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run ``model`` on one whole image (eval mode, CPU or the model's device)."""
    parameter = next(model.parameters())
    x = torch.from_numpy(noisy)[None, None].to(parameter.device, parameter.dtype)
    out: npt.NDArray[np.float32] = model(x)[0, 0].float().cpu().numpy()
    return out


def tune_gaussian(
    store: str,
    images: Sequence[int] | npt.NDArray[np.integer],
    dose_scale: float,
    realisations: int,
    seed: int,
    sigmas_px: Sequence[float] = GAUSSIAN_SIGMAS_PX,
) -> tuple[float, dict[float, float]]:
    """The Gaussian σ (px) with the best mean PSNR over ``images``; also every σ's mean PSNR."""
    scores: dict[float, list[float]] = {float(s): [] for s in sigmas_px}
    for _, noisy, clean in noisy_pairs(store, images, dose_scale, realisations, seed):
        for sigma in scores:
            scores[sigma].append(psnr_db(ndimage.gaussian_filter(noisy, sigma, mode="reflect"), clean))
    means = {sigma: float(np.mean(values)) for sigma, values in scores.items()}
    best = max(means, key=lambda s: means[s])
    return best, means


@dataclass(frozen=True)
class Evaluation:
    """Mean/std PSNR of a model and of the tuned Gaussian on the same noisy images."""

    model_psnr_db: float
    model_psnr_std_db: float
    gaussian_psnr_db: float
    gaussian_sigma_px: float
    raw_psnr_db: float
    n_images: int
    realisations: int

    @property
    def gain_over_gaussian_db(self) -> float:
        """How much the model beats the tuned Gaussian."""
        return self.model_psnr_db - self.gaussian_psnr_db


def evaluate(
    model: nn.Module,
    store: str,
    images: Sequence[int] | npt.NDArray[np.integer],
    gaussian_sigma_px: float,
    dose_scale: float = 1.0,
    realisations: int = 2,
    seed: int = 0,
) -> Evaluation:
    """Score ``model`` and a Gaussian of ``gaussian_sigma_px`` on whole noisy ``images``."""
    model.eval()
    ours, blur, raw = [], [], []
    for _, noisy, clean in noisy_pairs(store, images, dose_scale, realisations, seed):
        ours.append(psnr_db(denoise_image(model, noisy), clean))
        blur.append(psnr_db(ndimage.gaussian_filter(noisy, gaussian_sigma_px, mode="reflect"), clean))
        raw.append(float(10 * np.log10(1.0 / np.mean((noisy.astype(np.float64) - clean) ** 2))))
    return Evaluation(
        model_psnr_db=float(np.mean(ours)),
        model_psnr_std_db=float(np.std(ours)),
        gaussian_psnr_db=float(np.mean(blur)),
        gaussian_sigma_px=float(gaussian_sigma_px),
        raw_psnr_db=float(np.mean(raw)),
        n_images=len(np.asarray(images)),
        realisations=realisations,
    )
