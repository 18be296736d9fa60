"""Overlapping tiles of a frame, as data, and crop-and-paste stitching.

A frame larger than a denoiser's tile is cut into overlapping tiles; each tile
is processed on its own and only the tile's *kept* region — at least
``overlap_px`` away from every tile edge that is not a frame edge — is pasted
back. When ``overlap_px`` is at least the model's receptive-field radius, every
kept pixel saw exactly the input it would have seen in the whole frame, so the
stitched output equals the whole-frame output.

Tiles are plain frozen dataclasses computed up front; the last tile along an
axis is shifted back so that it ends on the frame edge instead of running off
it. Imports only numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lowdose.errors import LowdoseInputError


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in frame pixel coordinates.

    Attributes
    ----------
    start, stop
        The input read for this tile: ``frame[start:stop]``.
    keep_start, keep_stop
        The part of the tile's output pasted back into the frame; always inside
        ``[start, stop)``. The kept spans of one axis partition ``[0, size)``.
    """

    start: int
    stop: int
    keep_start: int
    keep_stop: int

    @property
    def read(self) -> slice:
        """Slice of the frame that is the tile's input."""
        return slice(self.start, self.stop)

    @property
    def crop(self) -> slice:
        """Slice of the tile's output that is kept."""
        return slice(self.keep_start - self.start, self.keep_stop - self.start)

    @property
    def paste(self) -> slice:
        """Slice of the frame the kept output is pasted into."""
        return slice(self.keep_start, self.keep_stop)


@dataclass(frozen=True)
class TileSpec:
    """One 2-D tile: a :class:`Span` along y and one along x."""

    y: Span
    x: Span

    @property
    def read(self) -> tuple[slice, slice]:
        """``(y, x)`` slices of the frame that are the tile's input."""
        return self.y.read, self.x.read

    @property
    def crop(self) -> tuple[slice, slice]:
        """``(y, x)`` slices of the tile's output that are kept."""
        return self.y.crop, self.x.crop

    @property
    def paste(self) -> tuple[slice, slice]:
        """``(y, x)`` slices of the frame the kept output goes to."""
        return self.y.paste, self.x.paste


def spans(size: int, tile_px: int, overlap_px: int, align_px: int = 1) -> list[Span]:
    """Overlapping tiles covering ``[0, size)`` along one axis.

    Parameters
    ----------
    size
        Frame length along the axis, in pixels.
    tile_px
        Tile length; a frame no longer than this is a single tile.
    overlap_px
        Minimum margin between a kept region and an interior tile edge.
        Consecutive tiles overlap by at least ``2 * overlap_px``.
    align_px
        Tile starts are multiples of this (e.g. ``2**scales`` of a U-Net, whose
        pooling grid must line up with the whole frame's); the last tile starts
        at ``size - tile_px``, aligned when ``size`` and ``tile_px`` are.

    Returns
    -------
    list of Span
        Tiles in increasing order; the last one ends on ``size``.

    Raises
    ------
    LowdoseInputError
        If ``tile_px <= 2 * overlap_px`` (the tiles could not advance).

    Examples
    --------
    >>> [(s.start, s.stop, s.keep_start, s.keep_stop) for s in spans(100, 64, 8)]
    [(0, 64, 0, 50), (36, 100, 50, 100)]
    """
    if size < 1:
        raise LowdoseInputError(f"tiling: frame size must be positive, got {size}")
    if overlap_px < 0:
        raise LowdoseInputError(f"tiling: overlap_px must be >= 0, got {overlap_px}")
    if tile_px >= size:
        return [Span(0, size, 0, size)]
    step = (tile_px - 2 * overlap_px) // max(1, align_px) * max(1, align_px)
    if step < 1:
        raise LowdoseInputError(
            f"tiling: tile_px ({tile_px}) must exceed twice overlap_px ({overlap_px}) by at least "
            f"align_px ({align_px}); "
            "use a larger tile or a smaller overlap"
        )
    starts = [0]
    while starts[-1] + tile_px < size:
        starts.append(min(starts[-1] + step, size - tile_px))
    stops = [s + tile_px for s in starts]
    # Split each overlap at its middle: both neighbours keep >= overlap_px of margin.
    cuts = [0] + [(nxt + prev_stop) // 2 for nxt, prev_stop in zip(starts[1:], stops[:-1], strict=True)]
    cuts.append(size)
    return [Span(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(zip(starts, stops, strict=True))]


def tile_specs(
    shape: tuple[int, int],
    tile_px: int | tuple[int, int],
    overlap_px: int | tuple[int, int],
    align_px: int = 1,
) -> list[TileSpec]:
    """The 2-D tiles of a frame of ``shape`` (row-major order).

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the frame.
    tile_px, overlap_px
        Tile size and minimum kept margin, one value for both axes or ``(y, x)``.
    align_px
        Tile starts are multiples of this (see :func:`spans`).

    Examples
    --------
    >>> len(tile_specs((100, 30), 64, 8))
    2
    """
    tile_y, tile_x = (tile_px, tile_px) if isinstance(tile_px, int) else tile_px
    over_y, over_x = (overlap_px, overlap_px) if isinstance(overlap_px, int) else overlap_px
    return [
        TileSpec(sy, sx)
        for sy in spans(int(shape[0]), tile_y, over_y, align_px)
        for sx in spans(int(shape[1]), tile_x, over_x, align_px)
    ]


def stitch(
    tiles: Sequence[np.ndarray], specs: Sequence[TileSpec], shape: tuple[int, ...], dtype: str = "float32"
) -> np.ndarray:
    """Paste the kept part of each tile output into a new array of ``shape``.

    ``tiles[i]`` is the output for ``specs[i]`` with the tile's spatial size in
    its last two axes; leading axes (frames) are carried through.
    """
    if len(tiles) != len(specs):
        raise ValueError(f"stitch: {len(tiles)} tile outputs for {len(specs)} tile specs")
    out = np.empty(shape, dtype=dtype)
    for tile, spec in zip(tiles, specs, strict=True):
        cy, cx = spec.crop
        py, px = spec.paste
        out[..., py, px] = tile[..., cy, cx]
    return out


def apply_tiled(
    frames: np.ndarray,
    kernel: Callable[[np.ndarray], np.ndarray],
    tile_px: int | tuple[int, int],
    overlap_px: int | tuple[int, int],
    align_px: int = 1,
) -> np.ndarray:
    """Apply a shape-preserving ``kernel`` to ``frames[..., y, x]`` tile by tile.

    The kernel receives ``frames[..., tile_y, tile_x]`` and must return an array
    of the same shape; the result is the stitched float32 output.
    """
    specs = tile_specs((frames.shape[-2], frames.shape[-1]), tile_px, overlap_px, align_px)
    if len(specs) == 1:
        return np.asarray(kernel(frames), dtype="float32")
    outputs = [kernel(np.ascontiguousarray(frames[(..., *spec.read)])) for spec in specs]
    return stitch(outputs, specs, frames.shape)
