import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowdose.errors import LowdoseInputError
from lowdose.parallel.tiling import apply_tiled, spans, stitch, tile_specs


@settings(max_examples=150, deadline=None)
@given(
    ny=st.integers(1, 300),
    nx=st.integers(1, 300),
    tile=st.integers(8, 96),
    overlap=st.integers(0, 20),
    align=st.sampled_from([1, 2, 4]),
)
def test_kept_regions_cover_every_pixel_exactly_once(ny, nx, tile, overlap, align):
    if tile - 2 * overlap < align:
        with pytest.raises(LowdoseInputError):
            tile_specs((max(ny, tile + 1), nx), tile, overlap, align)
        return
    hits = np.zeros((ny, nx), dtype=np.int32)
    for spec in tile_specs((ny, nx), tile, overlap, align):
        (ry, rx), (py, px) = spec.read, spec.paste
        assert 0 <= ry.start and ry.stop <= ny and 0 <= rx.start and rx.stop <= nx
        assert ry.stop - ry.start == min(tile, ny) and rx.stop - rx.start == min(tile, nx)
        hits[py, px] += 1
    assert (hits == 1).all()


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 500), tile=st.integers(8, 96), overlap=st.integers(0, 20))
def test_interior_cuts_keep_the_overlap_margin(size, tile, overlap):
    if tile - 2 * overlap < 1:
        return
    result = spans(size, tile, overlap)
    assert result[0].start == 0 and result[-1].stop == size
    for span in result:
        if span.keep_start > 0:
            assert span.keep_start - span.start >= overlap
        if span.keep_stop < size:
            assert span.stop - span.keep_stop >= overlap


def test_last_tile_shifts_back_to_the_edge():
    result = spans(100, 64, 8)
    assert [(s.start, s.stop) for s in result] == [(0, 64), (36, 100)]


def test_stitch_of_identity_tiles_is_the_frame():
    rng = np.random.default_rng(1)
    frames = rng.random((3, 77, 131)).astype(np.float32)
    specs = tile_specs((77, 131), 32, 5)
    tiles = [frames[(..., *s.read)] for s in specs]
    np.testing.assert_array_equal(stitch(tiles, specs, frames.shape), frames)
    np.testing.assert_array_equal(apply_tiled(frames, lambda t: t, 32, 5), frames)
