"""The streaming patch sampler: determinism, sharding, no padding, fresh noise, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from lowdose.errors import StoreError
from lowdose.store import schema
from lowdose.training.data import resolve_splits
from lowdose.training.sampler import Augmentation, PatchSampler, validation_patches
from tests.unit.training.synthetic_store import OPTICS, write_synthetic_set


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_set(tmp_path_factory.mktemp("sim") / "set.zarr", n_structures=6, defoci=2, size=80)


def _constant_store(path: Path, value: float, n: int = 3, size: int = 70) -> Path:
    ds = xr.Dataset(
        {
            "clean": (("image", "y", "x"), np.full((n, size, size), value, dtype=np.float32)),
            "done": (("image",), np.ones(n, dtype=np.uint8)),
        },
        coords={
            "image": np.arange(n),
            **{c: ("image", np.zeros(n)) for c in ("defocus_nm", "tilt_x_deg", "tilt_y_deg")},
            "support_thickness_nm": ("image", np.full(n, 3.0)),
            "particle": ("image", np.array(["PtNp1"] * n, dtype=object)),
            "defect": ("image", np.array(["D0"] * n, dtype=object)),
            "contrast": ("image", np.array(["white"] * n, dtype=object)),
            "model_id": ("image", np.arange(n)),
        },
        attrs=dict(OPTICS),
    )
    schema.stamp(ds, schema.Layout.SIMULATION_SET).to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return path


def test_batches_are_a_pure_function_of_seed_and_step(store: Path) -> None:
    a = PatchSampler(store, [0, 1, 2, 3], 32, 4, dose_scale=1.0, seed=3)
    b = PatchSampler(store, [0, 1, 2, 3], 32, 4, dose_scale=1.0, seed=3)
    noisy_a, clean_a = a.batch(5)
    noisy_b, clean_b = b.batch(5)
    assert noisy_a.shape == clean_a.shape == (4, 1, 32, 32)
    assert torch.equal(noisy_a, noisy_b) and torch.equal(clean_a, clean_b)
    noisy_c, _ = a.batch(6)
    assert not torch.equal(noisy_a, noisy_c)
    assert torch.all(noisy_a == noisy_a.round()) and noisy_a.min() >= 0


def test_ranks_split_the_global_batch(store: Path) -> None:
    whole = PatchSampler(store, range(8), 24, 4, dose_scale=1.0, seed=1)
    shards = [PatchSampler(store, range(8), 24, 4, 1.0, 1, rank=r, world_size=2) for r in range(2)]
    noisy, clean = whole.batch(2)
    parts = [s.batch(2) for s in shards]
    assert torch.equal(torch.cat([p[0] for p in parts]), noisy)
    assert torch.equal(torch.cat([p[1] for p in parts]), clean)


def test_prefetching_iterator_yields_the_same_batches_in_order(store: Path) -> None:
    sampler = PatchSampler(store, range(6), 16, 2, 1.0, seed=0, prefetch=2, threads=2)
    steps = []
    for step, noisy, _ in sampler.iterate(3, 8):
        steps.append(step)
        assert torch.equal(noisy, sampler.batch(step)[0])
    assert steps == [3, 4, 5, 6, 7]


def test_augmented_patches_contain_no_padding(tmp_path: Path) -> None:
    path = _constant_store(tmp_path / "flat.zarr", 0.7)
    sampler = PatchSampler(path, [0, 1, 2], 40, 8, dose_scale=1.0, seed=0, augmentation=Augmentation())
    for step in range(2):
        _, clean = sampler.batch(step)
        torch.testing.assert_close(clean, torch.full_like(clean, 0.7))


def test_dose_scale_sets_the_noise_level(tmp_path: Path) -> None:
    path = _constant_store(tmp_path / "flat.zarr", 0.45, size=96)
    sampler = PatchSampler(path, [0, 1, 2], 64, 8, dose_scale=2.0, seed=0)
    noisy, clean = sampler.batch(0)
    assert float(clean.mean()) == pytest.approx(0.9)
    assert float(noisy.mean()) == pytest.approx(0.9, rel=0.05)
    assert float(noisy.var()) == pytest.approx(0.9, rel=0.1)


def test_validation_patches_are_fixed(store: Path) -> None:
    a = validation_patches(store, [4, 5], 3, 48, 1.0, seed=2)
    b = validation_patches(store, [4, 5], 3, 48, 1.0, seed=2)
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 1, 48, 48)


def test_splits_are_structure_disjoint(store: Path) -> None:
    splits = resolve_splits(store, {"defocus_nm": {"min": 0, "max": 10}}, (0.5, 0.25, 0.25), seed=0)
    ids = xr.open_zarr(store, consolidated=False)["model_id"].values
    groups = [set(ids[s].tolist()) for s in (splits.train, splits.validation, splits.test)]
    assert (
        groups[0].isdisjoint(groups[1])
        and groups[0].isdisjoint(groups[2])
        and groups[1].isdisjoint(groups[2])
    )
    assert sum(len(s) for s in (splits.train, splits.validation, splits.test)) == 12
    again = resolve_splits(store, {"defocus_nm": {"min": 0, "max": 10}}, (0.5, 0.25, 0.25), seed=0)
    assert again.dataset_sha256 == splits.dataset_sha256
    other = resolve_splits(store, {}, (0.5, 0.25, 0.25), seed=1)
    assert other.dataset_sha256 != splits.dataset_sha256


def test_missing_store_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        PatchSampler(tmp_path / "nope.zarr", [0], 16, 1, 1.0, 0)
