import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lowdose.analysis.metrics import psnr, ssim
from lowdose.errors import LowdoseInputError


def test_raw_noisy_image_scores_about_3_5_db() -> None:
    clean = np.full((256, 256), 0.45)
    raw = np.random.default_rng(0).poisson(clean)
    # MSE of Poisson noise is its mean: 10·log10(1/0.45) = 3.47 dB; the MSE's standard
    # error over 65536 pixels is sqrt((λ + 2λ²)/n) ≈ 0.8 %, i.e. 0.035 dB.
    assert psnr(raw, clean) == pytest.approx(10 * math.log10(1 / 0.45), abs=0.12)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(7, 40),
    width=st.integers(7, 40),
    scale=st.floats(0.01, 10.0),
    data_range=st.floats(0.5, 4.0),
    seed=st.integers(0, 2**16),
)
def test_equal_to_scikit_image(height: int, width: int, scale: float, data_range: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, scale, (height, width))
    est = ref + rng.normal(0, 0.1 * scale, (height, width))
    want_psnr = peak_signal_noise_ratio(ref, est, data_range=data_range)
    assert psnr(est, ref, data_range=data_range) == pytest.approx(want_psnr, rel=1e-12)
    want_ssim = structural_similarity(ref, est, data_range=data_range)
    assert ssim(est, ref, data_range=data_range) == pytest.approx(want_ssim, rel=1e-12)


def test_identical_images_and_errors() -> None:
    img = np.ones((8, 8))
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0)
    with pytest.raises(LowdoseInputError, match="shape"):
        psnr(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(LowdoseInputError, match="7×7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
