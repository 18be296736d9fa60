import numpy as np
import pytest

from lowdose.analysis import baselines as B
from lowdose.analysis.baselines import purelet
from lowdose.analysis.metrics import psnr
from lowdose.errors import LowdoseInputError
from tests.unit.analysis.synthetic import PIXEL_SIZE_A, grid, render


@pytest.fixture(scope="module")
def lattice() -> tuple[np.ndarray, np.ndarray]:
    clean = render((128, 128), grid(4, 4, origin=(16.0, 16.0)), amplitude=0.5, base=0.45)
    noisy = np.random.default_rng(1).poisson(clean).astype(np.float64)
    return clean, noisy


BASELINES = {
    "wiener": lambda x: B.adaptive_wiener(x),
    "wiener_poisson": lambda x: B.adaptive_wiener(x, noise_variance="poisson"),
    "lowpass": lambda x: B.fourier_lowpass(x, PIXEL_SIZE_A),
    "gaussian_1px": lambda x: B.gaussian_blur(x, 1.0),
    "median_3x3": lambda x: B.median_filter(x),
    "vst_nlm": lambda x: B.vst_nlm(x),
    "pure_let": lambda x: B.pure_let(x),
    "spot_mask": lambda x: B.fourier_spot_mask_filter(x, PIXEL_SIZE_A),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_improves_psnr_over_raw(name: str, lattice: tuple[np.ndarray, np.ndarray]) -> None:
    clean, noisy = lattice
    out = BASELINES[name](noisy)
    assert out.shape == noisy.shape and out.dtype == np.float64
    assert psnr(out, clean) > psnr(noisy, clean) + 2.5


def test_bm3d_improves_psnr_over_raw(lattice: tuple[np.ndarray, np.ndarray]) -> None:
    clean, noisy = lattice
    clean, noisy = clean[:64, :64], noisy[:64, :64]  # BM3D is slow: a small crop
    assert psnr(B.vst_bm3d(noisy), clean) > psnr(noisy, clean) + 10


def test_pure_let_beats_best_fixed_wiener(lattice: tuple[np.ndarray, np.ndarray]) -> None:
    clean, noisy = lattice
    best_wiener = max(
        psnr(B.adaptive_wiener(noisy, radius, nv), clean)
        for radius in (3.0, 5.0, 8.0, 13.0, 20.0)
        for nv in (None, "poisson")
    )
    assert psnr(B.pure_let(noisy), clean) > best_wiener + 0.5


def test_pure_is_unbiased_risk_estimate() -> None:
    # Average over noise realisations: PURE(θ) must equal the true MSE of θ for fixed weights.
    rng = np.random.default_rng(5)
    clean = render((32, 32), [(10.0, 12.0), (22.0, 20.0)], amplitude=1.5, base=0.45, sigma_px=3.0)
    weights = np.array([0.3, 0.6])
    pures, risks = [], []
    _, c_dh, _, _ = purelet._haar_forward(clean)
    for _ in range(400):
        x = rng.poisson(clean).astype(np.float64)
        s, dh, _, _ = purelet._haar_forward(x)
        theta = weights @ purelet._basis(dh.ravel(), s.ravel(), purelet.DEFAULT_TAUS)
        pures.append(purelet.pure_risk(dh, s, weights))
        risks.append(float(np.sum((theta - c_dh.ravel()) ** 2)))
    assert np.mean(pures) == pytest.approx(np.mean(risks), rel=0.05)
    # and the PURE-optimal weights minimise PURE
    x = rng.poisson(clean).astype(np.float64)
    s, dh, _, _ = purelet._haar_forward(x)
    best = purelet.pure_let_weights(dh, s)
    for delta in ([0.05, 0.0], [0.0, -0.05]):
        assert purelet.pure_risk(dh, s, best) <= purelet.pure_risk(dh, s, best + np.array(delta))


def test_haar_round_trip_and_pure_let_shapes() -> None:
    x = np.random.default_rng(0).poisson(2.0, (16, 16)).astype(np.float64)
    np.testing.assert_allclose(purelet._haar_inverse(*purelet._haar_forward(x)), x)
    batch = np.random.default_rng(1).poisson(0.8, (3, 32, 32)).astype(np.float64)
    together = purelet.pure_let_square(batch)
    for k in range(3):  # each image of a batch gets its own fit
        np.testing.assert_allclose(together[k], purelet.pure_let_square(batch[k]), rtol=1e-10, atol=1e-12)
    odd = np.random.default_rng(0).poisson(0.45, (100, 150))
    assert B.pure_let(odd, patch_px=64, stride_px=32, cycle_spins=1).shape == (100, 150)
    with pytest.raises(LowdoseInputError, match="power"):
        purelet.pure_let_square(np.zeros((12, 12)))
    with pytest.raises(LowdoseInputError, match="patch_px"):
        B.pure_let(odd, patch_px=100)


def test_tune_gaussian_sigma_picks_the_best() -> None:
    rng = np.random.default_rng(3)
    cleans = [render((96, 96), grid(3, 3, origin=(16.0, 16.0)), amplitude=0.5, base=0.45) for _ in range(2)]
    noisies = [rng.poisson(c).astype(np.float64) for c in cleans]
    best, scores = B.tune_gaussian_sigma(noisies, cleans, sigmas_px=(0.5, 2.0, 5.0, 20.0))
    assert best == max(scores, key=lambda k: scores[k])
    assert best in (2.0, 5.0) and scores[best] > scores[0.5] + 5
    with pytest.raises(LowdoseInputError):
        B.tune_gaussian_sigma(noisies, cleans[:1])


def test_lowpass_removes_only_high_frequencies() -> None:
    yy, xx = np.mgrid[:64, :64]
    low = np.cos(2 * np.pi * 4 * xx / 64)  # 4 cycles / (64·0.061 Å) ≈ 1.0 Å⁻¹
    high = np.cos(2 * np.pi * 20 * yy / 64)  # ≈ 5.1 Å⁻¹
    out = B.fourier_lowpass(1.0 + low + high, PIXEL_SIZE_A, cutoff_per_A=1.35)
    np.testing.assert_allclose(out, 1.0 + low, atol=1e-10)


def test_wiener_rejects_bad_noise_variance() -> None:
    with pytest.raises(LowdoseInputError, match="noise_variance"):
        B.adaptive_wiener(np.zeros((8, 8)), 2.0, noise_variance="gaussian")


def test_spot_mask_keeps_the_lattice_reflections() -> None:
    clean = render((128, 128), grid(4, 4, origin=(16.0, 16.0)), amplitude=0.5, base=0.45)
    noisy = np.random.default_rng(7).poisson(clean)
    mask = B.bragg_spot_mask(noisy, PIXEL_SIZE_A)
    power = np.abs(np.fft.fft2(clean - clean.mean())) ** 2
    # The strongest non-zero reflection (1/32 px⁻¹ ≈ 0.51 Å⁻¹) is kept, and its mirror image.
    assert mask[0, 4] and mask[0, -4] and mask[4, 0]
    assert mask.mean() < 0.2
    assert power[mask].sum() > 0.9 * power.sum()


def test_wiener_limits_match_local_mean_and_identity() -> None:
    from scipy import ndimage

    x = np.random.default_rng(2).poisson(1.0, (40, 50)).astype(np.float64)
    footprint = B.filters.disc_footprint(5.0).astype(np.float64)
    local_mean = ndimage.correlate(x, footprint / footprint.sum(), mode="reflect")
    np.testing.assert_allclose(B.adaptive_wiener(x, 5.0, noise_variance=1e9), local_mean, atol=1e-6)
    np.testing.assert_allclose(B.adaptive_wiener(x, 5.0, noise_variance=0.0), x, atol=1e-9)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_metrics_on_baseline_outputs_equal_scikit_image(
    name: str, lattice: tuple[np.ndarray, np.ndarray]
) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from lowdose.analysis.metrics import ssim

    clean, noisy = lattice
    out = BASELINES[name](noisy)
    assert psnr(out, clean) == pytest.approx(peak_signal_noise_ratio(clean, out, data_range=1.0), rel=1e-12)
    assert ssim(out, clean) == pytest.approx(structural_similarity(clean, out, data_range=1.0), rel=1e-12)


def test_tuned_gaussian_improves_psnr_on_unseen_image() -> None:
    rng = np.random.default_rng(11)
    train = render((96, 96), grid(3, 3, origin=(16.0, 16.0)), amplitude=0.5, base=0.45)
    test = render((96, 96), grid(3, 3, origin=(30.0, 22.0)), amplitude=0.5, base=0.45)
    sigma, _ = B.tune_gaussian_sigma([rng.poisson(train).astype(np.float64)], [train])
    noisy = rng.poisson(test).astype(np.float64)
    assert psnr(B.gaussian_blur(noisy, sigma), test) > psnr(noisy, test) + 10


def test_anscombe_exact_inverse_is_unbiased_on_a_poisson_lattice() -> None:
    # The VST baselines map a denoised Anscombe image back with the exact unbiased inverse:
    # given E[anscombe(z)] it must return E[z] = λ within 1 %, at every intensity of the lattice.
    from lowdose.physics.noise import anscombe, inverse_anscombe

    clean = render((48, 48), grid(2, 2, origin=(12.0, 12.0), spacing=24.0), amplitude=1.5, base=0.45)
    rng = np.random.default_rng(4)
    mean_transformed = np.mean([anscombe(rng.poisson(clean)) for _ in range(3000)], axis=0)
    levels = np.digitize(clean, np.quantile(clean, [0.25, 0.5, 0.75, 0.95]))
    algebraic = (mean_transformed / 2) ** 2 - 3 / 8
    worst_algebraic = 0.0
    for level in range(5):
        inside = levels == level
        truth = clean[inside].mean()
        assert inverse_anscombe(mean_transformed[inside]).mean() == pytest.approx(truth, rel=0.01)
        worst_algebraic = max(worst_algebraic, abs(algebraic[inside].mean() / truth - 1))
    assert worst_algebraic > 0.1  # the naive inverse is badly biased at these counts
