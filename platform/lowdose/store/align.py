"""Integer-pixel drift correction and time averaging of FrameSeries.

Single 0.45 e/px frames are far too noisy to register, so drift is measured the way
microscopists do it: frames are summed in blocks (default 40 frames = 1 s at
40 frames/s, at least 20), and each block sum is registered by phase correlation
against a reference block. Each frame then gets an integer shift, either its block's
(``per_frame="block"``, the default) or the rounded linear interpolation between
block centres (``per_frame="interpolate"``).

Shifts are stored as ``shift_y_px``/``shift_x_px`` (frame,) int32 variables beside
``counts``; the raw counts are never rewritten. :func:`aligned` gives a lazy view
without interpolation: each frame is translated by its integer shift and the view
is **cropped to the area every frame covers** (no wrap-around, so no atom is moved
from one edge to the other as ``np.roll`` would do).

Sign convention: a shift ``s`` means the content that sits at pixel ``p`` in the
reference block sits at ``p + s`` in the frame; the aligned frame is
``frame[p + s]``.

The numpy kernels (:func:`phase_correlation_shift`, :func:`crop_shifted`) import
no dask; the lazy views use xarray/dask. Never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import xarray as xr

from lowdose.errors import LowdoseInputError

MIN_BLOCK_FRAMES = 20
"""Fewest frames per block trusted for registration at ~0.45 e/px per frame."""

EDGE_TAPER = 0.25
"""Fraction of each image axis tapered by the Tukey window before the FFT."""

Reference = Literal["first", "previous"]
PerFrame = Literal["block", "interpolate"]


def phase_correlation_shift(
    reference: np.ndarray, moving: np.ndarray, *, smooth_px: float = 2.0
) -> tuple[int, int]:
    """Integer shift of ``moving`` relative to ``reference`` by phase correlation.

    Parameters
    ----------
    reference, moving
        Two 2-D images of the same shape (block sums of counts).
    smooth_px
        Gaussian smoothing (px) of the correlation surface; suppresses the
        white-noise floor that whitening gives Poisson images.

    Returns
    -------
    tuple of int
        ``(dy, dx)``: the content at ``p`` in ``reference`` is at ``p + (dy, dx)``
        in ``moving``.
    """
    ref = np.asarray(reference, dtype="float64")
    mov = np.asarray(moving, dtype="float64")
    if ref.shape != mov.shape or ref.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {ref.shape} and {mov.shape}")
    from scipy.signal.windows import tukey

    # A Tukey window tapers only the borders: a full Hann window biases large shifts towards 0.
    window = np.outer(tukey(ref.shape[0], EDGE_TAPER), tukey(ref.shape[1], EDGE_TAPER))
    f_ref = np.fft.rfft2((ref - ref.mean()) * window)
    f_mov = np.fft.rfft2((mov - mov.mean()) * window)
    cross = f_mov * np.conj(f_ref)
    cross /= np.abs(cross) + 1e-12
    if smooth_px > 0:
        ky = np.fft.fftfreq(ref.shape[0])[:, None]
        kx = np.fft.rfftfreq(ref.shape[1])[None, :]
        cross *= np.exp(-2.0 * (np.pi * smooth_px) ** 2 * (ky**2 + kx**2))
    surface = np.fft.irfft2(cross, s=ref.shape)
    peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
    dy, dx = (int(p) - n if p > n // 2 else int(p) for p, n in zip(peak, surface.shape, strict=True))
    return dy, dx


def crop_shifted(
    frames: np.ndarray,
    shift_y_px: np.ndarray,
    shift_x_px: np.ndarray,
    origin: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """Translate each frame by its integer shift and crop to ``origin``/``size``.

    ``out[i, p] = frames[i, origin + p + shift_i]``; no interpolation, no wrap.
    """
    shift_y = np.asarray(shift_y_px).reshape(-1)
    shift_x = np.asarray(shift_x_px).reshape(-1)
    out = np.empty((frames.shape[0], *size), dtype=frames.dtype)
    for i in range(frames.shape[0]):
        y0 = origin[0] + int(shift_y[i])
        x0 = origin[1] + int(shift_x[i])
        out[i] = frames[i, y0 : y0 + size[0], x0 : x0 + size[1]]
    return out


def common_area(
    shape: tuple[int, int], shift_y_px: np.ndarray, shift_x_px: np.ndarray
) -> tuple[int, int, int, int]:
    """Return ``(y0, x0, height, width)`` of the area every shifted frame covers."""
    bounds = []
    for n, shifts in zip(shape, (shift_y_px, shift_x_px), strict=True):
        low = max(0, -int(np.min(shifts))) if len(shifts) else 0
        high = n - max(0, int(np.max(shifts))) if len(shifts) else n
        if high <= low:
            raise LowdoseInputError(f"drift of {np.ptp(shifts)} px leaves no common area in {n} px frames")
        bounds.append((low, high - low))
    return bounds[0][0], bounds[1][0], bounds[0][1], bounds[1][1]


def _counts(series: Any) -> xr.DataArray:
    if isinstance(series, xr.Dataset):
        if "counts" not in series:
            raise LowdoseInputError(
                "the dataset has no 'counts' variable "
                f"(expected a FrameSeries; has {sorted(map(str, series.data_vars))})"
            )
        return series["counts"]
    if isinstance(series, xr.DataArray):
        return series
    array = series
    if getattr(array, "ndim", 0) != 3:
        raise LowdoseInputError(f"expected a (frame, y, x) series, got shape {getattr(array, 'shape', None)}")
    return xr.DataArray(array, dims=("frame", "y", "x"), name="counts")


def time_average(series: Any, n: int = 40) -> xr.DataArray:
    """Lazy sums of ``n`` consecutive frames (the paper's 1 s = 40-frame reference).

    Parameters
    ----------
    series
        A FrameSeries Dataset, a ``(frame, y, x)`` DataArray (e.g. :func:`aligned`)
        or a numpy/dask array.
    n
        Frames per sum; a trailing partial block is dropped.

    Returns
    -------
    xarray.DataArray
        ``(frame, y, x)`` uint32 sums (dask-backed when the input is), ``frame``
        and ``time_s`` of each block's first frame, ``attrs["frames_per_sum"] = n``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise LowdoseInputError(f"time_average: n must be a whole number of frames, got {n!r}")
    if n < 1:
        raise LowdoseInputError(f"time_average: n must be ≥ 1, got {n}")
    n = int(n)
    counts = _counts(series)
    if counts.sizes["frame"] < n:
        raise LowdoseInputError(f"time_average: series has {counts.sizes['frame']} frames, fewer than n={n}")
    coord_func = {name: "min" for name in counts.coords if "frame" in counts[name].dims}
    summed = counts.coarsen(frame=n, boundary="trim", coord_func=coord_func or "min").sum()
    summed = summed.astype("uint32")
    summed.attrs = {**counts.attrs, "frames_per_sum": n, "long_name": f"sum of {n} frames"}
    return summed.rename(f"counts_sum_{n}")


def _block_sums(counts: xr.DataArray, block_frames: int, target_bytes: int = 64 << 20) -> Any:
    """Yield eager float block sums, reading a few whole blocks at a time."""
    n_blocks = counts.sizes["frame"] // block_frames
    frame_bytes = counts.sizes["y"] * counts.sizes["x"] * counts.dtype.itemsize
    per_read = max(1, target_bytes // (block_frames * frame_bytes))
    for first in range(0, n_blocks, per_read):
        last = min(first + per_read, n_blocks)
        raw = counts.isel(frame=slice(first * block_frames, last * block_frames)).values
        sums = raw.reshape(last - first, block_frames, *raw.shape[1:]).sum(axis=1, dtype="float64")
        yield from sums


def _interpolate(frames: np.ndarray, centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise-linear through the block centres, extended linearly beyond the end blocks."""
    result = np.interp(frames, centres, values).astype("float64")
    if len(centres) > 1:
        head, tail = frames < centres[0], frames > centres[-1]
        slope_head = (values[1] - values[0]) / (centres[1] - centres[0])
        slope_tail = (values[-1] - values[-2]) / (centres[-1] - centres[-2])
        result[head] = values[0] + slope_head * (frames[head] - centres[0])
        result[tail] = values[-1] + slope_tail * (frames[tail] - centres[-1])
    return result


def estimate_drift(
    series: Any,
    *,
    block_frames: int = 40,
    reference: Reference = "first",
    per_frame: PerFrame = "block",
    smooth_px: float = 2.0,
    allow_small_blocks: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate per-frame integer drift of a series from block sums.

    Parameters
    ----------
    series
        FrameSeries Dataset, ``counts`` DataArray or ``(frame, y, x)`` array.
    block_frames
        Frames summed per registration block (≥ 20 unless ``allow_small_blocks``).
    reference
        ``"first"``: register every block against the first (no accumulated error);
        ``"previous"``: against the previous block, shifts accumulated (follows a
        structure that changes over hours).
    per_frame
        ``"block"``: each frame takes its block's shift; ``"interpolate"``: rounded
        linear interpolation between block centres.
    smooth_px
        See :func:`phase_correlation_shift`.
    allow_small_blocks
        Permit ``block_frames < 20``.

    Returns
    -------
    shift_y_px, shift_x_px : numpy.ndarray
        ``(frame,)`` int32 shifts (first block = 0).
    block_shifts : numpy.ndarray
        ``(block, 2)`` int32 shifts of the block sums.
    """
    if block_frames < 1 or (block_frames < MIN_BLOCK_FRAMES and not allow_small_blocks):
        raise LowdoseInputError(
            f"block_frames={block_frames}: expected ≥ {MIN_BLOCK_FRAMES} "
            "(single low-dose frames are too noisy)"
        )
    if reference not in ("first", "previous") or per_frame not in ("block", "interpolate"):
        raise LowdoseInputError(f"reference={reference!r}/per_frame={per_frame!r} not understood")
    counts = _counts(series)
    n_frames = counts.sizes["frame"]
    if n_frames < block_frames:
        raise LowdoseInputError(f"series has {n_frames} frames, fewer than one block of {block_frames}")
    block_shifts: list[tuple[int, int]] = []
    ref: np.ndarray | None = None
    for block in _block_sums(counts, block_frames):
        if ref is None:
            ref, shift = block, (0, 0)
        elif reference == "first":
            shift = phase_correlation_shift(ref, block, smooth_px=smooth_px)
        else:
            step = phase_correlation_shift(ref, block, smooth_px=smooth_px)
            shift = (block_shifts[-1][0] + step[0], block_shifts[-1][1] + step[1])
            ref = block
        block_shifts.append(shift)
    blocks = np.asarray(block_shifts, dtype="int32")
    frames = np.arange(n_frames)
    if per_frame == "block":
        index = np.minimum(frames // block_frames, len(blocks) - 1)
        shift_y, shift_x = blocks[index, 0], blocks[index, 1]
    else:
        centres = np.arange(len(blocks)) * block_frames + (block_frames - 1) / 2
        shift_y = np.rint(_interpolate(frames, centres, blocks[:, 0])).astype("int32")
        shift_x = np.rint(_interpolate(frames, centres, blocks[:, 1])).astype("int32")
    return shift_y.astype("int32"), shift_x.astype("int32"), blocks


def align_series(
    path: str | os.PathLike[str],
    *,
    block_frames: int = 40,
    reference: Reference = "first",
    per_frame: PerFrame = "block",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimate drift of the FrameSeries at ``path`` and store the per-frame shifts.

    Returns the alignment record written to ``attrs["alignment"]``.
    """
    from lowdose.store.series import open_series, write_shifts

    ds = open_series(path, storage_options=storage_options)
    shift_y, shift_x, blocks = estimate_drift(
        ds, block_frames=block_frames, reference=reference, per_frame=per_frame
    )
    record = {
        "method": "phase correlation of block sums, integer pixels",
        "block_frames": block_frames,
        "reference": reference,
        "per_frame": per_frame,
        "n_blocks": len(blocks),
        "max_abs_shift_px": int(np.abs(blocks).max()) if len(blocks) else 0,
    }
    write_shifts(path, shift_y, shift_x, record, storage_options=storage_options)
    return record


def aligned(ds: xr.Dataset, variable: str = "counts") -> xr.DataArray:
    """Lazy drift-corrected view of ``ds[variable]``, cropped to the common area.

    Requires ``shift_y_px``/``shift_x_px`` (run :func:`align_series` first). The
    result is ``(frame, y, x)`` with ``attrs["aligned_origin_px"] = [y0, x0]``, the
    position of its first pixel in the reference frame's raw grid.
    """
    import dask.array as da

    if "shift_y_px" not in ds.coords or "shift_x_px" not in ds.coords:
        raise LowdoseInputError("series has no drift shifts; run `lowdose align SERIES.zarr` first")
    source = ds[variable]
    shift_y = np.asarray(ds["shift_y_px"].values)
    shift_x = np.asarray(ds["shift_x_px"].values)
    y0, x0, height, width = common_area((source.sizes["y"], source.sizes["x"]), shift_y, shift_x)
    data = da.asarray(source.data).rechunk({1: -1, 2: -1})
    frame_chunks = data.chunks[0]
    lazy_y = da.from_array(shift_y.reshape(-1, 1, 1), chunks=(frame_chunks, 1, 1))
    lazy_x = da.from_array(shift_x.reshape(-1, 1, 1), chunks=(frame_chunks, 1, 1))
    view = da.map_blocks(
        crop_shifted,
        data,
        lazy_y,
        lazy_x,
        origin=(y0, x0),
        size=(height, width),
        chunks=(frame_chunks, (height,), (width,)),
        dtype=data.dtype,
    )
    coords = {name: coord for name, coord in source.coords.items() if set(coord.dims) <= {"frame"}}
    attrs = {**source.attrs, "aligned_origin_px": [y0, x0]}
    return xr.DataArray(
        view, dims=("frame", "y", "x"), coords=coords, attrs=attrs, name=f"{variable}_aligned"
    )
