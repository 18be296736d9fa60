"""The cheaper imaging internals compute what the straightforward versions compute."""

import numpy as np
import pytest
from scipy import fft as sfft
from scipy import ndimage

from lowdose.physics.imaging import (
    VACUUM_DISTANCE_A,
    _ColumnDiscs,
    _spatial_frequencies,
    _TransferTerms,
    column_intensities,
    fourier_resample,
    transfer_function,
    vacuum_mask,
)
from lowdose.physics.optics import Optics


def test_transfer_terms_match_transfer_function():
    optics = Optics()
    q = _spatial_frequencies(96, 0.1)
    terms = _TransferTerms(q, optics)
    for defocus in (0.0, 3.5, -7.0, 16.0):
        ref = transfer_function(q, defocus, optics)
        np.testing.assert_allclose(terms(defocus), ref.astype(np.complex64), rtol=0, atol=2e-6)


def test_vacuum_mask_matches_tiled_distance_transform():
    rng = np.random.default_rng(0)
    extent, n = 40.0, 150
    positions = rng.uniform(0, extent, size=(60, 3))
    positions[:, :2] = positions[:, :2] * 0.5 + extent * 0.45  # a cluster, wrapping near no edge
    positions = np.vstack([positions, [[0.3, 39.8, 0.0]]])  # and one atom at the periodic corner
    occupied = np.zeros((n, n), dtype=bool)
    ij = np.floor(positions[:, [1, 0]] / (extent / n)).astype(int) % n
    occupied[ij[:, 0], ij[:, 1]] = True
    tiled = ndimage.distance_transform_edt(~np.tile(occupied, (3, 3)))[n : 2 * n, n : 2 * n]
    expected = tiled * (extent / n) > VACUUM_DISTANCE_A
    got = vacuum_mask(positions, extent, n)
    assert got.any() and not got.all()
    np.testing.assert_array_equal(got, expected)


def test_column_discs_match_column_intensities():
    rng = np.random.default_rng(1)
    image = rng.random((64, 64)).astype(np.float32)
    x, y = rng.uniform(-1, 65, 30), rng.uniform(-1, 65, 30)  # some discs wrap around
    np.testing.assert_allclose(
        _ColumnDiscs(image.shape, x, y, 2.6).means(image), column_intensities(image, x, y, 2.6), rtol=1e-6
    )


@pytest.mark.parametrize(("n_in", "n_out"), [(512, 869), (64, 37), (63, 100), (33, 33)])
def test_fourier_resample_equals_shift_crop_unshift(n_in, n_out):
    image = np.random.default_rng(2).random((n_in, n_in)).astype(np.float32)
    spec = np.fft.fftshift(sfft.fft2(image))
    out = np.zeros((n_out, n_out), dtype=spec.dtype)
    m = min(n_in, n_out)
    src = slice(n_in // 2 - m // 2, n_in // 2 - m // 2 + m)
    dst = slice(n_out // 2 - m // 2, n_out // 2 - m // 2 + m)
    out[dst, dst] = spec[src, src]
    expected = sfft.ifft2(np.fft.ifftshift(out)).real * (n_out / n_in) ** 2
    np.testing.assert_array_equal(fourier_resample(image, n_out), expected)
