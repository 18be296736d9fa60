"""Small synthetic frame stacks for the store tests (not the series generator)."""

from __future__ import annotations

import numpy as np


def blob_image(shape: tuple[int, int], n_blobs: int, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Random Gaussian 'atom columns' on a flat background, mean 1."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 0.3)
    for y, x in rng.uniform(0, 1, (n_blobs, 2)) * np.array(shape):
        image += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma_px**2))
    return image / image.mean()


def drifting_frames(
    shifts: np.ndarray, frame_shape: tuple[int, int], dose_e_per_px: float, seed: int
) -> np.ndarray:
    """Poisson frames of one blob image displaced by per-frame integer ``shifts`` (n, 2)."""
    rng = np.random.default_rng(seed)
    margin = int(np.abs(shifts).max()) + 1
    big = blob_image((frame_shape[0] + 2 * margin, frame_shape[1] + 2 * margin), 60, 2.0, rng)
    frames = np.empty((len(shifts), *frame_shape), dtype="uint8")
    for i, (dy, dx) in enumerate(shifts):
        window = big[margin - dy : margin - dy + frame_shape[0], margin - dx : margin - dx + frame_shape[1]]
        frames[i] = rng.poisson(dose_e_per_px * window)
    return frames
