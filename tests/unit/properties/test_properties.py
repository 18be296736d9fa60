"""Property-based tests (hypothesis) on random shapes and values: tiling, alignment, LLR, metrics.

Derandomised (the same examples every run) and small: the whole file runs in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from lowdose.analysis.likelihood import column_llr
from lowdose.analysis.metrics import psnr, ssim
from lowdose.parallel.tiling import apply_tiled
from lowdose.store.align import common_area, crop_shifted, phase_correlation_shift

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)


# --- tiling: tiled == whole when the overlap covers the receptive radius -----------------------


def _uniform(radius: int) -> object:
    def kernel(tile: np.ndarray) -> np.ndarray:
        size = (1,) * (tile.ndim - 2) + (2 * radius + 1, 2 * radius + 1)
        return ndimage.uniform_filter(tile.astype("float32"), size=size, mode="reflect")

    return kernel


@PROPERTY
@given(
    frames=st.integers(1, 3),
    ny=st.integers(1, 90),
    nx=st.integers(1, 90),
    radius=st.integers(0, 4),
    extra=st.integers(0, 3),
    tile=st.integers(8, 48),
    align=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_tiled_local_filter_equals_whole_frame(
    frames: int, ny: int, nx: int, radius: int, extra: int, tile: int, align: int, seed: int
) -> None:
    overlap = radius + extra
    assume(tile - 2 * overlap >= align)
    data = np.random.default_rng(seed).poisson(0.45, (frames, ny, nx)).astype("float32")
    kernel = _uniform(radius)
    np.testing.assert_allclose(
        apply_tiled(data, kernel, tile, overlap, align), kernel(data), rtol=0, atol=1e-6
    )


def _conv_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 1, 3, padding=1),
    )  # receptive radius 3 px, zero padding at the frame border
    return model.eval()


@settings(PROPERTY, max_examples=25)
@given(
    ny=st.integers(5, 70),
    nx=st.integers(5, 70),
    extra=st.integers(0, 2),
    tile=st.integers(12, 40),
    seed=st.integers(0, 2**16),
)
def test_tiled_conv_model_equals_whole_frame(ny: int, nx: int, extra: int, tile: int, seed: int) -> None:
    torch.set_num_threads(1)
    overlap = 3 + extra
    assume(tile - 2 * overlap >= 1)
    model = _conv_model(seed % 7)
    data = np.random.default_rng(seed).poisson(0.45, (2, ny, nx)).astype("float32")

    def kernel(tile_frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(tile_frames)[:, None])[:, 0].numpy()

    np.testing.assert_allclose(apply_tiled(data, kernel, tile, overlap), kernel(data), rtol=0, atol=1e-5)


# --- alignment ------------------------------------------------------------------------------------


def _texture(seed: int, size: int, sigma_px: float = 1.0) -> np.ndarray:
    """A random texture with ~``sigma_px`` features (atomic columns are 1–2 px), 20–80 counts/px.

    Much smoother content in frames this small biases the integer estimate by 1 px towards 0
    for large shifts (measured: σ = 2 px, 40 px frames, shifts up to 10 px: 9 of 66 off by one);
    drift blocks of real series are far larger than the drift between them.
    """
    noise = np.random.default_rng(seed).random((size, size))
    smooth = ndimage.gaussian_filter(noise, sigma_px, mode="wrap")
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return 20.0 + 60.0 * smooth


@PROPERTY
@given(
    dy=st.integers(-10, 10),
    dx=st.integers(-10, 10),
    size=st.integers(40, 72),
    seed=st.integers(0, 2**16),
)
def test_phase_correlation_recovers_integer_shifts(dy: int, dx: int, size: int, seed: int) -> None:
    canvas = _texture(seed, size + 24)
    rng = np.random.default_rng(seed + 1)
    y0 = x0 = 12
    reference = rng.poisson(canvas[y0 : y0 + size, x0 : x0 + size])
    # the content at p in the reference is at p + (dy, dx) in the moving frame
    moving = rng.poisson(canvas[y0 - dy : y0 - dy + size, x0 - dx : x0 - dx + size])
    assert phase_correlation_shift(reference, moving) == (dy, dx)


@PROPERTY
@given(
    sy=st.floats(-6, 6),
    sx=st.floats(-6, 6),
    seed=st.integers(0, 2**16),
)
def test_phase_correlation_rounds_subpixel_shifts(sy: float, sx: float, seed: int) -> None:
    size = 56
    canvas = _texture(seed, size + 24)
    moved = ndimage.shift(canvas, (sy, sx), order=3, mode="wrap")  # content at p moves to p + s
    rng = np.random.default_rng(seed + 1)
    reference = rng.poisson(canvas[12 : 12 + size, 12 : 12 + size])
    moving = rng.poisson(moved[12 : 12 + size, 12 : 12 + size])
    dy, dx = phase_correlation_shift(reference, moving)
    assert abs(dy - sy) < 1.0 and abs(dx - sx) < 1.0


@PROPERTY
@given(
    shifts=st.lists(st.tuples(st.integers(-6, 6), st.integers(-6, 6)), min_size=1, max_size=6),
    ny=st.integers(13, 40),
    nx=st.integers(13, 40),
    seed=st.integers(0, 2**16),
)
def test_crop_shifted_aligns_frames_on_their_common_area(
    shifts: list[tuple[int, int]], ny: int, nx: int, seed: int
) -> None:
    canvas = np.random.default_rng(seed).integers(0, 9, (ny + 12, nx + 12))
    c = 6
    dy = np.array([s[0] for s in shifts])
    dx = np.array([s[1] for s in shifts])
    frames = np.stack([canvas[c - a : c - a + ny, c - b : c - b + nx] for a, b in shifts])
    y0, x0, h, w = common_area((ny, nx), dy, dx)
    assert h == ny - max(0, dy.max()) - max(0, -dy.min()) and w == nx - max(0, dx.max()) - max(0, -dx.min())
    out = crop_shifted(frames, dy, dx, (y0, x0), (h, w))
    expected = canvas[c + y0 : c + y0 + h, c + x0 : c + x0 + w]
    for frame in out:
        np.testing.assert_array_equal(frame, expected)


# --- likelihood ratio -------------------------------------------------------------------------

RATES = st.floats(0.01, 20.0)


@st.composite
def frame_and_columns(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    ny, nx = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    raw = draw(arrays(np.int64, (ny, nx), elements=st.integers(0, 30)))
    n = draw(st.integers(1, 6))
    x = np.array(draw(st.lists(st.floats(0, nx - 1), min_size=n, max_size=n)))
    y = np.array(draw(st.lists(st.floats(0, ny - 1), min_size=n, max_size=n)))
    return raw, x, y, draw(st.floats(0.5, 4.0))


@PROPERTY
@given(case=frame_and_columns(), lambda_vac=RATES)
def test_llr_is_zero_when_lambda_equals_vacuum(case: tuple, lambda_vac: float) -> None:
    raw, x, y, radius = case
    llr = column_llr(raw, np.full(raw.shape, lambda_vac), x, y, radius_px=radius, lambda_vac=lambda_vac)
    np.testing.assert_allclose(llr, 0.0, atol=1e-12)


@PROPERTY
@given(case=frame_and_columns(), lam=RATES, lambda_vac=RATES, more=st.integers(1, 5))
def test_llr_sign_and_monotonicity(case: tuple, lam: float, lambda_vac: float, more: int) -> None:
    raw, x, y, radius = case
    assume(abs(lam - lambda_vac) > 1e-6)
    den = np.full(raw.shape, lam)
    base = column_llr(raw, den, x, y, radius_px=radius, lambda_vac=lambda_vac)
    brighter = column_llr(raw + more, den, x, y, radius_px=radius, lambda_vac=lambda_vac)
    assert np.isfinite(base).all()
    # more counts favour the brighter hypothesis: LLR rises when λ > λ_vac and falls when λ < λ_vac
    assert (np.sign(brighter - base) == np.sign(lam - lambda_vac)).all()
    # counts that average exactly λ favour the column (a Poisson KL divergence, ≥ 0) ...
    k = float(round(lam))
    assume(k > 0)
    at_lam = column_llr(
        np.full(raw.shape, k), np.full(raw.shape, k), x, y, radius_px=radius, lambda_vac=lambda_vac
    )
    assert (at_lam >= -1e-12).all()
    # ... and counts that average exactly λ_vac favour vacuum (≤ 0)
    kv = float(round(lambda_vac))
    assume(kv > 0)
    at_vac = column_llr(np.full(raw.shape, kv), den, x, y, radius_px=radius, lambda_vac=kv)
    assert (at_vac <= 1e-12).all()


# --- metrics --------------------------------------------------------------------------------------


@st.composite
def image_pair(draw: st.DrawFn, min_side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(min_side, 24)), draw(st.integers(min_side, 24)))
    values = st.floats(-50, 50, allow_nan=False, width=64)
    return draw(arrays(np.float64, shape, elements=values)), draw(arrays(np.float64, shape, elements=values))


@PROPERTY
@given(pair=image_pair(), data_range=st.floats(0.1, 100.0), scale=st.floats(0.1, 10.0))
def test_psnr_properties(pair: tuple[np.ndarray, np.ndarray], data_range: float, scale: float) -> None:
    a, b = pair
    assert psnr(a, a, data_range) == math.inf
    value = psnr(a, b, data_range)
    assert value == psnr(b, a, data_range)
    if value != math.inf:
        assert math.isclose(psnr(a * scale, b * scale, data_range * scale), value, rel_tol=1e-9, abs_tol=1e-9)
        further = a + 2.0 * (b - a)  # twice the error: 6.02 dB lower
        assert math.isclose(psnr(further, a, data_range), value - 20 * math.log10(2), abs_tol=1e-6)


@PROPERTY
@given(pair=image_pair(min_side=7), data_range=st.floats(0.1, 100.0))
def test_ssim_properties(pair: tuple[np.ndarray, np.ndarray], data_range: float) -> None:
    a, b = pair
    value = ssim(a, b, data_range)
    assert -1.0 <= value <= 1.0
    assert math.isclose(value, ssim(b, a, data_range), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(ssim(a, a, data_range), 1.0, abs_tol=1e-12)


def test_ssim_refuses_small_images() -> None:
    from lowdose.errors import LowdoseInputError

    with pytest.raises(LowdoseInputError, match="at least 7"):
        ssim(np.zeros((6, 9)), np.zeros((6, 9)))
