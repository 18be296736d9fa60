import numpy as np
import pytest

from lowdose.physics.noise import _expectation_table, anscombe, inverse_anscombe, poisson_noise


def test_poisson_reproducible_and_integer() -> None:
    lam = np.full((32, 32), 0.45)
    a = poisson_noise(lam, seed=7)
    b = poisson_noise(lam, seed=7)
    assert a.dtype.kind == "i"
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, poisson_noise(lam, seed=8))


def test_poisson_rejects_bad_expectation() -> None:
    with pytest.raises(ValueError):
        poisson_noise(np.array([-1.0]), seed=0)
    with pytest.raises(ValueError):
        poisson_noise(np.array([np.nan]), seed=0)


@pytest.mark.parametrize("lam", [0.1, 0.45, 1.0, 3.0, 20.0, 200.0])
def test_inverse_is_unbiased(lam: float) -> None:
    rng = np.random.default_rng(3)
    z = rng.poisson(lam, size=400_000)
    estimate = float(inverse_anscombe(anscombe(z).mean()))
    assert estimate == pytest.approx(lam, rel=0.01, abs=2e-3)


def test_inverse_is_continuous_at_table_end() -> None:
    expected, _ = _expectation_table()
    d = expected[-1]
    below = inverse_anscombe(d - 1e-9)
    above = inverse_anscombe(d + 1e-9)
    assert above == pytest.approx(below, rel=2e-3)
    assert np.all(np.diff(expected) > 0)
