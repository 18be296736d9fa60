"""The streaming patch sampler: determinism, sharding, no padding, fresh noise, splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from scipy import ndimage

from lowdose.errors import StoreError
from lowdose.store import schema
from lowdose.store.integrity import checksum_codecs
from lowdose.training.data import resolve_splits
from lowdose.training.sampler import (
    Augmentation,
    PatchSampler,
    RegionReader,
    _region_side,
    _rotate_resize,
    validation_patches,
)
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


def _clean_array(
    store: object, data: np.ndarray, chunks: tuple[int, ...], checksum: bool = True
) -> zarr.Array:
    from zarr.codecs import ZstdCodec

    codec = ZstdCodec(level=0)
    array = zarr.create_array(
        store=store,
        name="clean",
        shape=data.shape,
        chunks=chunks,
        dtype="float32",
        fill_value=np.nan,
        compressors=checksum_codecs(codec) if checksum else [codec],
    )
    for i in range(data.shape[0]):
        if i != 3:  # image 3 is never written: its chunk files do not exist (fill value)
            array[i] = data[i]
    return array


@pytest.mark.parametrize(
    ("chunks", "checksum"),
    [((1, 70, 53), True), ((1, 16, 16), True), ((2, 32, 20), True), ((1, 16, 16), False)],
)
def test_region_reads_match_zarr_for_any_chunking(
    tmp_path: Path, chunks: tuple[int, ...], checksum: bool
) -> None:
    data = np.random.default_rng(0).random((5, 70, 53), dtype=np.float32)
    array = _clean_array(str(tmp_path / "c.zarr"), data, chunks, checksum)
    reader = RegionReader(array)
    assert reader._files is not None  # lowdose's layout on a local disk: chunk files read directly
    rng = np.random.default_rng(1)
    for _ in range(25):
        image = int(rng.integers(0, 5))
        y0, y1 = sorted(rng.choice(71, 2, replace=False).tolist())
        x0, x1 = sorted(rng.choice(54, 2, replace=False).tolist())
        got = reader.read(image, y0, y1, x0, x1)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, array[image, y0:y1, x0:x1])
    assert np.isnan(reader.read(3, 0, 70, 0, 53)).all()
    np.testing.assert_array_equal(reader.read(4, 0, 70, 0, 53), data[4])


def test_region_reads_of_other_stores_go_through_zarr() -> None:
    data = np.random.default_rng(0).random((5, 40, 40), dtype=np.float32)
    array = _clean_array(zarr.storage.MemoryStore(), data, (1, 16, 16))
    reader = RegionReader(array)
    assert reader._files is None
    np.testing.assert_array_equal(reader.read(2, 5, 37, 11, 40), data[2, 5:37, 11:40])


def test_corrupt_tile_is_a_store_error_naming_it(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((5, 70, 53), dtype=np.float32)
    path = tmp_path / "c.zarr"
    reader = RegionReader(_clean_array(str(path), data, (1, 16, 16)))
    chunk = path / "clean" / "c" / "1" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    np.testing.assert_array_equal(reader.read(1, 0, 32, 0, 53), data[1, :32])  # the tile is not touched
    with pytest.raises(StoreError, match=r"corrupt chunk clean/c/1/2/0: checksum mismatch"):
        reader.read(1, 30, 40, 10, 20)


def test_rotation_and_resize_are_scipy_affine_transform_order_1() -> None:
    # The augmentation's definition: output pixel o samples the region at
    # M (o - c_out) + c_in, M = rotation(angle) / scale, bilinear, edges repeated.
    rng = np.random.default_rng(0)
    for patch_size in (48, 33):
        for _ in range(10):
            angle, scale = math.radians(rng.uniform(-45, 45)), rng.uniform(0.955, 1.055)
            side = _region_side(patch_size, angle, scale)
            region = rng.random((side, side), dtype=np.float32)
            c, s = math.cos(angle) / scale, math.sin(angle) / scale
            matrix = np.array([[c, -s], [s, c]])
            offset = np.full(2, (side - 1) / 2) - matrix @ np.full(2, (patch_size - 1) / 2)
            expected = ndimage.affine_transform(
                region, matrix, offset=offset, output_shape=(patch_size,) * 2, order=1, mode="nearest"
            )
            got = _rotate_resize(region, angle, scale, patch_size)
            assert got.dtype == np.float32 and got.shape == (patch_size, patch_size)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_tiled_and_whole_image_stores_give_the_same_batches(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((5, 70, 53), dtype=np.float32)
    whole = _clean_array(str(tmp_path / "whole.zarr"), data, (1, 70, 53))
    tiled = _clean_array(str(tmp_path / "tiled.zarr"), data, (1, 16, 16))
    assert whole.chunks != tiled.chunks
    samplers = [
        PatchSampler(tmp_path / name, [0, 1, 2, 4], 24, 4, 1.0, seed=5)
        for name in ("whole.zarr", "tiled.zarr")
    ]
    for step in range(3):
        (noisy_a, clean_a), (noisy_b, clean_b) = (s.batch(step) for s in samplers)
        assert torch.equal(noisy_a, noisy_b) and torch.equal(clean_a, clean_b)
