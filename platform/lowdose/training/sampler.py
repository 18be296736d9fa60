"""Streaming patch sampler: random augmented patches read straight from zarr chunks.

Nothing is ever materialised beyond the patches in flight: every sample is a
pure function of ``(seed, step, index in the global batch)`` — which image,
where, rotation, resize, flips and the Poisson noise seed — so selectors need no
storage, a resumed run continues with exactly the samples it would have seen,
and a DDP rank takes its own slice of each global batch. A sample reads one
region of one image with a zarr slice (one chunk = one image, decompressed on
read), rotates and resizes it with a single bilinear resampling so the
centre-cropped patch contains no padding, flips it, and draws fresh Poisson
counts at the configured dose. Background threads keep at most ``prefetch``
batches ready, which bounds memory whatever the store size.

numpy/scipy/zarr/torch; never imports dask.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import zarr
from scipy import ndimage

from lowdose.errors import StoreError
from lowdose.physics.noise import poisson_noise
from lowdose.store.integrity import read_checked

VALIDATION_STREAM = 2**31 - 1
"""Seed-sequence entry that separates validation patches from training samples."""


@dataclass(frozen=True)
class Augmentation:
    """Random geometric augmentation of training patches."""

    flips: bool = True
    rotation_deg: float = 45.0
    scale_range: tuple[float, float] = (0.955, 1.055)

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation (validation)."""
        return cls(flips=False, rotation_deg=0.0, scale_range=(1.0, 1.0))


def open_clean_array(store: str | Path) -> zarr.Array:
    """Open the ``clean`` array of a SimulationSet read-only (no xarray, no dask)."""
    try:
        array = zarr.open_array(store=str(store), path="clean", mode="r")
    except Exception as err:  # zarr raises several kinds for missing/corrupt stores
        raise StoreError(f"{store}: cannot open the 'clean' array ({type(err).__name__})") from None
    if array.ndim != 3:
        raise StoreError(f"{store}: 'clean' must be (image, y, x), found {array.ndim} dims")
    return array


def _region_side(patch_size: int, angle_rad: float, scale: float) -> int:
    # Side of the axis-aligned square that contains the rotated, resized patch
    # plus one pixel of bilinear support on each side.
    extent = patch_size * (abs(math.cos(angle_rad)) + abs(math.sin(angle_rad))) / scale
    return math.ceil(extent) + 3


def extract_patch(
    array: zarr.Array,
    image: int,
    patch_size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
) -> npt.NDArray[np.float32]:
    """Read and augment one clean patch of ``image``; all randomness comes from ``rng``."""
    height, width = array.shape[1:]
    angle = math.radians(rng.uniform(-augmentation.rotation_deg, augmentation.rotation_deg))
    scale = float(rng.uniform(*augmentation.scale_range))
    flip_y, flip_x = (rng.random(2) < 0.5) if augmentation.flips else (False, False)
    side = _region_side(patch_size, angle, scale)
    if side > min(height, width):
        # Small images: drop the rotation/resize rather than pad.
        angle, scale, side = 0.0, 1.0, patch_size
        if side > min(height, width):
            raise StoreError(f"patch size {patch_size} exceeds image size {height}×{width}")
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    selection = (image, slice(y0, y0 + side), slice(x0, x0 + side))
    region = read_checked(array, selection, str(array.store)).astype(np.float32, copy=False)
    if angle == 0.0 and scale == 1.0:
        offset = (side - patch_size) // 2
        patch = region[offset : offset + patch_size, offset : offset + patch_size]
    else:
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        matrix = np.array([[cos, -sin], [sin, cos]])
        centre_out = np.full(2, (patch_size - 1) / 2)
        centre_in = np.full(2, (side - 1) / 2)
        patch = ndimage.affine_transform(
            region,
            matrix,
            offset=centre_in - matrix @ centre_out,
            output_shape=(patch_size, patch_size),
            order=1,
            mode="nearest",
        )
    if flip_y:
        patch = patch[::-1]
    if flip_x:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch, dtype=np.float32)


class PatchSampler:
    """Deterministic, sharded, prefetching source of (noisy, clean) training batches.

    Parameters
    ----------
    store
        SimulationSet ``.zarr`` path.
    images
        Global image indices (the ``image`` coord) to sample from.
    patch_size
        Patch side in pixels.
    global_batch_size
        Samples per step over all ranks; each rank draws ``global / world_size``.
    dose_scale
        Factor from the store's expected counts to the training dose.
    seed
        Run seed.
    augmentation
        Geometric augmentation.
    rank, world_size
        DDP shard of each global batch.
    prefetch, threads
        Batches kept ready ahead and background threads preparing them.
    """

    def __init__(
        self,
        store: str | Path,
        images: Sequence[int] | npt.NDArray[np.integer],
        patch_size: int,
        global_batch_size: int,
        dose_scale: float,
        seed: int,
        augmentation: Augmentation | None = None,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 4,
        threads: int = 2,
    ) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"batch size {global_batch_size} is not divisible by {world_size} ranks")
        self.images = np.asarray(images, dtype=np.int64)
        if self.images.size == 0:
            raise StoreError(f"{store}: the training selection has no images")
        self.array = open_clean_array(store)
        self.patch_size = patch_size
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.dose_scale = dose_scale
        self.seed = seed
        self.augmentation = augmentation or Augmentation()
        self.rank = rank
        self.world_size = world_size
        self.prefetch = prefetch
        self.threads = threads

    def sample(self, step: int, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Sample ``index`` of the global batch of ``step``: (noisy counts, clean expectation)."""
        rng = np.random.default_rng([self.seed, step, index])
        image = int(self.images[rng.integers(0, self.images.size)])
        clean = extract_patch(self.array, image, self.patch_size, rng, self.augmentation) * np.float32(
            self.dose_scale
        )
        np.maximum(clean, 0.0, out=clean)
        noisy = poisson_noise(clean, rng).astype(np.float32)
        return noisy, clean

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The share of this rank in the global batch of ``step`` as (B, 1, P, P) tensors."""
        start = self.rank * self.local_batch_size
        pairs = [self.sample(step, index) for index in range(start, start + self.local_batch_size)]
        noisy = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        clean = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        return noisy, clean

    def iterate(self, start_step: int, stop_step: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(step, noisy, clean)`` for steps in ``[start_step, stop_step)``, prefetched."""
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="lowdose-patches") as pool:
            pending: deque[tuple[int, Future[tuple[torch.Tensor, torch.Tensor]]]] = deque()
            next_step = start_step
            try:
                while True:
                    while next_step < stop_step and len(pending) < self.prefetch:
                        pending.append((next_step, pool.submit(self.batch, next_step)))
                        next_step += 1
                    if not pending:
                        return
                    step, future = pending.popleft()
                    noisy, clean = future.result()
                    yield step, noisy, clean
            finally:
                for _, future in pending:
                    future.cancel()


def validation_patches(
    store: str | Path,
    images: Sequence[int] | npt.NDArray[np.integer],
    count: int,
    patch_size: int,
    dose_scale: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of (noisy, clean) validation patches with fixed noise, spread over ``images``."""
    array = open_clean_array(store)
    images = np.asarray(images, dtype=np.int64)
    if images.size == 0:
        raise StoreError(f"{store}: the validation selection has no images")
    patch_size = min(patch_size, *array.shape[1:])
    noisy, clean = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, VALIDATION_STREAM, index])
        image = int(images[index % images.size])
        patch = extract_patch(array, image, patch_size, rng, Augmentation.none()) * np.float32(dose_scale)
        np.maximum(patch, 0.0, out=patch)
        clean.append(patch)
        noisy.append(poisson_noise(patch, rng).astype(np.float32))
    return torch.from_numpy(np.stack(noisy))[:, None], torch.from_numpy(np.stack(clean))[:, None]
