import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lowdose.analysis.likelihood import (
    classify_llr,
    column_llr,
    disc_offsets,
    estimate_vacuum_level,
    likelihood_map,
)
from lowdose.errors import LowdoseInputError
from tests.unit.analysis.synthetic import grid, render

RADIUS_PX = 0.5 / 0.061


def _direct_llr(raw: np.ndarray, den: np.ndarray, x: float, y: float, radius: float, lam_vac: float) -> float:
    yy, xx = np.mgrid[: raw.shape[0], : raw.shape[1]]
    disc = (yy - round(y)) ** 2 + (xx - round(x)) ** 2 <= radius**2
    lam = max(den[disc].mean(), 1e-6)
    counts = raw[disc]
    return float(np.mean(stats.poisson.logpmf(counts, lam) - stats.poisson.logpmf(counts, lam_vac)))


def test_real_column_positive_fake_column_negative() -> None:
    rng = np.random.default_rng(4)
    centres = grid(3, 3)
    clean = render((110, 110), centres, amplitude=0.6, base=0.45)
    # Average over frames: a single frame's disc has only ~200 pixels of shot noise.
    llr_real, llr_fake = [], []
    for _ in range(20):
        raw = rng.poisson(clean)
        llr_real.append(column_llr(raw, clean, centres[:, 0], centres[:, 1], radius_px=RADIUS_PX))
        # A spurious column: the denoiser paints a blob where the raw counts are vacuum.
        fake_den = render((110, 110), [(55.0, 55.0)], amplitude=0.5, base=0.45)
        vac = rng.poisson(np.full((110, 110), 0.45))
        llr_fake.append(column_llr(vac, fake_den, [55.0], [55.0], radius_px=RADIUS_PX))
    assert np.median(llr_real) > 0.005
    assert np.median(llr_fake) < -0.006


def test_matches_scipy_logpmf() -> None:
    rng = np.random.default_rng(1)
    den = render((64, 64), [(30.0, 33.0)], amplitude=0.8, base=0.45)
    raw = rng.poisson(den)
    xs, ys = [30.2, 5.0, 0.0, 63.0], [33.4, 50.0, 0.0, 10.0]  # includes discs clipped by the border
    got = column_llr(raw, den, xs, ys, radius_px=RADIUS_PX, lambda_vac=0.45)
    want = [_direct_llr(raw, den, x, y, RADIUS_PX, 0.45) for x, y in zip(xs, ys, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(4, 40),
    width=st.integers(4, 40),
    rate=st.floats(0.05, 5.0),
    lam_vac=st.floats(0.05, 3.0),
    radius=st.floats(0.0, 6.0),
    seed=st.integers(0, 2**16),
)
def test_llr_property_matches_direct(
    height: int, width: int, rate: float, lam_vac: float, radius: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    den = rng.uniform(0.5, 1.5, (height, width)) * rate
    raw = rng.poisson(den)
    x = rng.uniform(0, width - 1)
    y = rng.uniform(0, height - 1)
    got = column_llr(raw, den, [x], [y], radius_px=radius, lambda_vac=lam_vac)[0]
    assert got == pytest.approx(_direct_llr(raw, den, x, y, radius, lam_vac), rel=1e-9, abs=1e-12)
    # When the denoised rate equals the vacuum rate the two hypotheses coincide.
    flat = column_llr(raw, np.full_like(den, lam_vac), [x], [y], radius_px=radius, lambda_vac=lam_vac)[0]
    assert flat == pytest.approx(0.0, abs=1e-12)


def test_disc_outside_frame_is_nan_and_zero_rate_is_finite() -> None:
    raw = np.ones((10, 10), dtype=np.int64)
    den = np.zeros((10, 10))
    out = column_llr(raw, den, [100.0, 5.0], [100.0, 5.0], radius_px=2.0)
    assert np.isnan(out[0]) and np.isfinite(out[1]) and out[1] < -1


def test_disc_offsets() -> None:
    assert len(disc_offsets(0.0)) == 1
    assert len(disc_offsets(1.0)) == 5
    assert len(disc_offsets(1.5)) == 9
    with pytest.raises(LowdoseInputError):
        disc_offsets(-1.0)


def test_bad_inputs() -> None:
    with pytest.raises(LowdoseInputError, match="shape"):
        column_llr(np.zeros((4, 4)), np.zeros((4, 5)), [1.0], [1.0], radius_px=1.0)
    with pytest.raises(LowdoseInputError, match="lambda_vac"):
        column_llr(np.zeros((4, 4)), np.zeros((4, 4)), [1.0], [1.0], radius_px=1.0, lambda_vac=0.0)
    with pytest.raises(LowdoseInputError, match="threshold"):
        classify_llr([0.0], real_threshold=-0.01, spurious_threshold=0.01)


def test_classify_thresholds_inclusive() -> None:
    llr = np.array([0.005, 0.0049, -0.0059, -0.006, np.nan, 0.2, -0.2])
    got = classify_llr(llr).tolist()
    assert got == ["real", "undecided", "undecided", "spurious", "undecided", "real", "spurious"]
    assert classify_llr(llr, 0.1, -0.1).tolist().count("undecided") == 5


def test_estimate_vacuum_level() -> None:
    rng = np.random.default_rng(2)
    clean = np.full((128, 256), 0.45)
    clean[:, 128:] = render((128, 128), grid(4, 4, origin=(16.0, 16.0)), amplitude=0.5, base=0.8)
    raw = rng.poisson(clean)
    est = estimate_vacuum_level(raw, clean, window_px=17, fraction=0.2)
    assert est == pytest.approx(0.45, rel=0.05)
    mask = np.zeros(clean.shape, dtype=bool)
    mask[:, :100] = True
    assert estimate_vacuum_level(raw, clean, vacuum_mask=mask) == pytest.approx(raw[:, :100].mean())
    with pytest.raises(LowdoseInputError, match="vacuum_mask"):
        estimate_vacuum_level(raw, clean, vacuum_mask=np.zeros((2, 2), dtype=bool))


def test_likelihood_map() -> None:
    out = likelihood_map((20, 30), [5.0, 25.0], [5.0, 15.0], [0.01, -0.02], radius_px=2.0)
    assert out.shape == (20, 30)
    assert out[5, 5] == 0.01 and out[15, 25] == -0.02 and out[7, 5] == 0.01
    assert np.isnan(out[0, 0]) and np.isnan(out[10, 15])
    assert np.isfinite(out).sum() == 2 * 13
    with pytest.raises(LowdoseInputError, match="llr"):
        likelihood_map((20, 30), [5.0], [5.0], [0.1, 0.2], radius_px=2.0)
