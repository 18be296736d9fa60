import dask.array as da
import numpy as np
import pytest
import torch
from dask.array.utils import assert_eq

from lowdose.errors import LowdoseInputError
from lowdose.parallel.denoise import denoise_array, denoise_frames, denoise_series
from lowdose.store.schema import Layout, validate
from lowdose.store.series import open_series
from tests.unit.parallel.tiny import TinyConv, tiny_handle, write_series

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return TinyConv(n_layers=4, width=4, seed=3)


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).poisson(0.45, size=(5, 70, 93)).astype(np.uint8)


def test_tiled_output_equals_whole_frame_output(model, frames):
    handle = tiny_handle(model)
    whole = denoise_frames(frames, handle, tile_px=512, batch_frames=2, device="cpu")
    tiled = denoise_frames(frames, handle, tile_px=24, batch_frames=3, device="cpu")
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    # Too little overlap is visibly wrong: the test can fail.
    short = denoise_frames(frames, handle, tile_px=24, overlap_px=1, device="cpu")
    assert np.abs(short - whole).max() > 1e-3


def test_lazy_equals_eager(model, frames):
    handle = tiny_handle(model)
    eager = denoise_frames(frames, handle, tile_px=40, device="cpu")
    lazy = denoise_array(da.from_array(frames, chunks=(2, 35, 93)), handle, tile_px=40, device="cpu")
    assert lazy.chunks[1:] == ((70,), (93,))
    assert_eq(lazy, eager, check_graph=False)


def test_single_frame_and_bad_input(model, frames):
    handle = tiny_handle(model)
    one = denoise_frames(frames[0], handle, device="cpu")
    assert one.shape == frames.shape[1:] and one.dtype == np.float32
    with pytest.raises(LowdoseInputError):
        denoise_frames(frames[None], handle)
    with pytest.raises(LowdoseInputError):
        denoise_array(da.zeros((2, 4, 4)), handle, out_dtype="int8")


def test_denoise_series_is_lazy_and_stamped(tmp_path, model):
    series = open_series(write_series(tmp_path / "s.zarr", n_frames=6, shape=(32, 32), chunk_frames=3))
    out = denoise_series(series, tiny_handle(model), device="cpu", out_dtype="float16")
    assert isinstance(out["denoised"].data, da.Array)
    assert out["denoised"].data.numblocks == (2, 1, 1)
    validate(out, Layout.DENOISED_SERIES)
    assert out.attrs["model_id"] == "TinyConv"
    values = out["denoised"].values
    assert values.dtype == np.float16 and np.isfinite(values).all()


def test_tiling_a_real_unet_is_exact_with_aligned_tiles(frames):
    from lowdose.models.registry import build
    from lowdose.parallel.denoise import model_handle

    handle = model_handle(build("compact", base_channels=4, scales=1, unshuffle=2).eval())
    assert handle.align_px == 4 and handle.halo_px >= 20
    stack = np.random.default_rng(2).poisson(0.45, size=(2, 128, 192)).astype(np.uint8)
    whole = denoise_frames(stack, handle, tile_px=1024, device="cpu")
    tile = 2 * handle.halo_px + 2 * handle.align_px
    tiled = denoise_frames(stack, handle, tile_px=tile, device="cpu")
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)


def test_artefact_handle_uses_the_card_and_loads_once(tmp_path):
    from lowdose.models.artefact import model_sha256, save_artefact
    from lowdose.models.registry import build
    from lowdose.parallel.denoise import model_handle

    net = build("compact", base_channels=4, scales=1, unshuffle=2).eval()
    path = save_artefact(
        tmp_path / "m", net, name="compact", model_config={"base_channels": 4, "scales": 1, "unshuffle": 2}
    )
    handle = model_handle(path)
    assert handle.sha256 == model_sha256(path)
    assert handle.module is None and handle.source == str(path.resolve())
    assert handle.align_px == 4
    first = handle.load("cpu")
    assert handle.load("cpu") is first  # one load per process
    frame = np.random.default_rng(3).poisson(0.45, size=(16, 16)).astype(np.uint8)
    np.testing.assert_array_equal(
        denoise_frames(frame, handle, device="cpu"), denoise_frames(frame, net, device="cpu")
    )


def test_a_catalog_model_entry_is_a_model_and_other_objects_are_named_errors(tmp_path):
    from lowdose.errors import LowdoseInputError
    from lowdose.models.artefact import model_sha256, save_artefact
    from lowdose.models.registry import build
    from lowdose.parallel.denoise import model_handle
    from lowdose.store.catalog import open_catalog, register

    net = build("compact", base_channels=4, scales=1, unshuffle=2).eval()
    path = save_artefact(
        tmp_path / "m", net, name="compact", model_config={"base_channels": 4, "scales": 1, "unshuffle": 2}
    )
    register(tmp_path / "cat.yaml", "net", path)
    entry = open_catalog(tmp_path / "cat.yaml").open("net")  # a ModelArtefact, as a notebook gets it
    handle = model_handle(entry)
    assert handle.sha256 == model_sha256(path) and handle.source == str(path.resolve())
    for bad in (3, b"default", [path]):
        with pytest.raises(LowdoseInputError, match="model: expected 'default', an artefact directory"):
            model_handle(bad)


_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from lowdose.parallel.cluster import set_malloc_thresholds

def faults_per_cycle():
    np.ones(2**20).sum()  # 8 MB: mmapped, or heap once the thresholds are set
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(2**20).sum()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

untuned = faults_per_cycle()
assert set_malloc_thresholds(32 * 2**20, 64 * 2**20)
print(untuned, faults_per_cycle())
"""


def test_malloc_thresholds_stop_page_faults_of_freed_buffers():
    """With Dask's worker environment (trim threshold 64 kB) every 8 MB buffer is faulted in anew."""
    import os
    import subprocess
    import sys

    if not (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION")):
        pytest.skip("glibc only")
    # 4 kB pages, so faults count pages (numpy would madvise 2 MB huge pages otherwise)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "NUMPY_MADVISE_HUGEPAGE": "0"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    untuned, tuned = (float(x) for x in out.stdout.split())
    assert untuned > 1000  # 8 MB = 2048 pages, touched after every fresh mmap
    assert tuned < 50
    # Outside a Dask worker it leaves the process alone. Asked in a fresh process: in this
    # one an earlier test's threaded local worker may already have tuned it (cached per process).
    fresh = subprocess.run(
        [sys.executable, "-c", "from lowdose.parallel.cluster import tune_worker_allocator as t; print(t())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_one_named_error(model, frames):
    with pytest.raises(LowdoseInputError, match=r"device 'cuda:1': this process sees 0 CUDA device\(s\)"):
        denoise_frames(frames[:1], model, device="cuda:1")
    # auto still falls back to the CPU
    assert denoise_frames(frames[:1], model, device="auto").shape == frames[:1].shape


def test_tta_averages_the_symmetries_and_is_equivariant(model, frames):
    handle = tiny_handle(model)
    single = denoise_frames(frames, handle, device="cpu")
    by_hand = np.mean(
        [
            single,
            denoise_frames(frames.transpose(0, 2, 1), handle, device="cpu").transpose(0, 2, 1),
        ],
        axis=0,
    )
    two = denoise_frames(frames, handle, device="cpu", tta=2)
    np.testing.assert_allclose(two, by_hand, rtol=0, atol=1e-6)
    assert np.abs(two - single).max() > 1e-3  # the random net is not symmetric: averaging changes it
    # Averaged over all eight, the output turns with the input (a 90° rotation, and a mirror),
    # including when the rectangular frames are tiled.
    eight = denoise_frames(frames, handle, device="cpu", tta=8, tile_px=40)
    rotated = denoise_frames(np.rot90(frames, 1, axes=(1, 2)), handle, device="cpu", tta=8, tile_px=40)
    np.testing.assert_allclose(rotated, np.rot90(eight, 1, axes=(1, 2)), rtol=0, atol=1e-5)
    mirrored = denoise_frames(frames[:, :, ::-1], handle, device="cpu", tta=8)
    np.testing.assert_allclose(mirrored, eight[:, :, ::-1], rtol=0, atol=1e-5)
    lazy = denoise_array(da.from_array(frames, chunks=(2, 70, 93)), handle, device="cpu", tta=8, tile_px=40)
    assert_eq(lazy, eight, check_graph=False)


@pytest.mark.parametrize("bad", [0, 3, 16])
def test_tta_outside_its_choices_is_refused(model, frames, bad):
    with pytest.raises(LowdoseInputError, match="tta must be one of 1, 2, 4, 8"):
        denoise_frames(frames, tiny_handle(model), device="cpu", tta=bad)
