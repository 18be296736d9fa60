"""Map the per-frame analysis kernel over frame chunks; ragged results become dataframes.

Each frame chunk is one task: :func:`analyze_block` calls
``lowdose.analysis.frame.analyze_frame`` on every frame of the block with the
block's global frame offset, the frame's ground truth when there is one, and
returns a ColumnTable part and a FrameTable part with fixed dtypes. The lazy
path (:func:`analyze_arrays`) builds one delayed call per block and a dask
dataframe with an explicit ``meta``; the eager path is the same function.

No science here. Imports pandas/numpy; dask only inside functions; never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    import dask.array as da
    import dask.dataframe as dd

AnalyzeKernel = Callable[..., tuple[pd.DataFrame, dict[str, Any]]]

COLUMN_DTYPES: dict[str, str] = {
    "frame": "int64",
    "x_px": "float64",
    "y_px": "float64",
    "sigma_px": "float64",
    "intensity": "float64",
    "llr": "float64",
    "verdict": "str",
    "surface": "bool",
}
"""dtypes of the ColumnTable columns of ``store.schema.COLUMN_TABLE_COLUMNS``."""


def default_kernel() -> AnalyzeKernel:
    """The shipped per-frame kernel, ``lowdose.analysis.frame.analyze_frame``."""
    from lowdose.analysis.frame import analyze_frame

    return analyze_frame


def analysis_config(block: dict[str, Any] | Any | None) -> Any:
    """Turn a YAML ``analysis:`` block into an ``AnalysisConfig`` (``None`` → defaults).

    An ``AnalysisConfig`` (or any non-mapping) is passed through unchanged.
    """
    if block is not None and not isinstance(block, dict):
        return block
    from lowdose.analysis.frame import AnalysisConfig
    from lowdose.config.base import validate_config

    return validate_config(AnalysisConfig, block or {}, "analysis")


def config_for_sums(config: Any, n_frames: int) -> Any:
    """The analysis config for frames that are sums of ``n_frames`` frames.

    A sum of ``n`` Poisson frames is a Poisson frame at ``n`` times the dose, so
    the rates in the config (the vacuum level and the detection threshold, both
    in counts per pixel) scale by ``n``; ``"estimate"`` stays as it is.
    """
    if n_frames == 1:
        return config
    if config is None:
        # the kernel's defaults are per-frame rates: they must scale too
        from lowdose.analysis.frame import AnalysisConfig

        config = AnalysisConfig()
    update: dict[str, Any] = {}
    lam = getattr(config, "lambda_vac", None)
    if isinstance(lam, int | float):
        update["lambda_vac"] = float(lam) * n_frames
    threshold = getattr(config, "detection_threshold", None)
    if isinstance(threshold, int | float):
        update["detection_threshold"] = float(threshold) * n_frames
    return config.model_copy(update=update) if update else config


def conform_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Schema columns first with fixed dtypes (extra kernel columns kept after them)."""
    table = table.reset_index(drop=True)
    for name, dtype in COLUMN_DTYPES.items():
        if name not in table.columns:
            raise LowdoseInputError(f"analysis kernel: ColumnTable lacks column {name!r}")
        table[name] = table[name].astype(dtype)
    extra = [c for c in table.columns if c not in COLUMN_DTYPES]
    return table[[*COLUMN_DTYPES, *extra]]


def _conform_frames(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["frame"] = table["frame"].astype("int64")
    table["time_s"] = table["time_s"].astype("float64")
    first = ["frame", "time_s"]
    return table[[*first, *(c for c in table.columns if c not in first)]]


def analyze_block(
    counts: np.ndarray,
    denoised: np.ndarray,
    *,
    frame_offset: int,
    pixel_size_A: float,
    time_s: np.ndarray | None = None,
    config: Any = None,
    ground_truth: pd.DataFrame | None = None,
    kernel: AnalyzeKernel | None = None,
    frames: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Analyse every frame of a ``(frame, y, x)`` block; frame numbers start at ``frame_offset``.

    Parameters
    ----------
    counts, denoised
        Raw counts and denoised frames of the block, same shape.
    frame_offset
        Global index of the block's first frame.
    pixel_size_A
        Pixel size in ångström.
    time_s
        Per-frame times of the block (default: none recorded).
    config
        The kernel's analysis config (``None``: its defaults).
    ground_truth
        Ground-truth columns with a global ``frame`` column; each frame gets its rows.
    kernel
        Per-frame analysis function (default :func:`default_kernel`).
    frames
        The block's frame numbers, when they are not ``frame_offset``, ``frame_offset + 1``, ...
        (a selection of a series' frames).

    Returns
    -------
    columns, frames
        ColumnTable and FrameTable parts of the block.
    """
    if counts.shape != denoised.shape or counts.ndim != 3:
        raise LowdoseInputError(
            f"analyze: counts {counts.shape} and denoised {denoised.shape} must match (f, y, x)"
        )
    kernel = kernel or default_kernel()
    by_frame = dict(tuple(ground_truth.groupby("frame"))) if ground_truth is not None else {}
    tables: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    if frames is not None and len(frames) != counts.shape[0]:
        raise LowdoseInputError(f"analyze: {len(frames)} frame numbers for {counts.shape[0]} frames")
    for i in range(counts.shape[0]):
        frame = int(frames[i]) if frames is not None else frame_offset + i
        truth = None
        if ground_truth is not None:
            truth = by_frame.get(frame, ground_truth.iloc[:0])
        raw = np.asarray(counts[i])
        columns, row = kernel(
            raw,
            np.asarray(denoised[i], dtype=np.float32),
            pixel_size_A=pixel_size_A,
            frame=frame,
            config=config,
            ground_truth=truth,
        )
        row = dict(row)
        row["frame"] = frame
        row.setdefault("time_s", float(time_s[i]) if time_s is not None else float("nan"))
        row.setdefault("counts", int(raw.sum(dtype=np.int64)))
        rows.append(row)
        tables.append(columns.assign(frame=frame))
    return conform_columns(pd.concat(tables, ignore_index=True)), _conform_frames(rows)


def analyze_arrays(
    counts: da.Array,
    denoised: da.Array,
    *,
    pixel_size_A: float,
    time_s: np.ndarray | None = None,
    config: Any = None,
    ground_truth: pd.DataFrame | None = None,
    kernel: AnalyzeKernel | None = None,
    frames: np.ndarray | None = None,
) -> tuple[dd.DataFrame, dd.DataFrame]:
    """Lazy ColumnTable and FrameTable of dask ``(frame, y, x)`` arrays, one task per frame chunk.

    The two arrays are aligned on ``counts``'s frame chunks. ``frames``: the frame
    numbers (default 0, 1, ...; ground truth is matched by them). Other arguments as
    :func:`analyze_block`.
    """
    import dask
    import dask.dataframe as dd

    if counts.shape != denoised.shape or counts.ndim != 3:
        raise LowdoseInputError(
            f"analyze: counts {counts.shape} and denoised {denoised.shape} must match (f, y, x)"
        )
    kernel = kernel or default_kernel()
    counts = counts.rechunk({1: -1, 2: -1})
    denoised = denoised.rechunk(counts.chunks)
    offsets = np.concatenate([[0], np.cumsum(counts.chunks[0])])
    labels = np.arange(counts.shape[0]) if frames is None else np.asarray(frames).astype(np.int64)
    if labels.shape != (counts.shape[0],):
        raise LowdoseInputError(f"analyze: {labels.shape} frame numbers for {counts.shape[0]} frames")
    column_parts, frame_parts = [], []
    for i, (c_block, d_block) in enumerate(
        zip(counts.to_delayed().ravel(), denoised.to_delayed().ravel(), strict=True)
    ):
        start, stop = int(offsets[i]), int(offsets[i + 1])
        block_frames = labels[start:stop]
        truth = None
        if ground_truth is not None:
            truth = ground_truth[ground_truth["frame"].isin(block_frames)]
        parts = dask.delayed(analyze_block, nout=2)(
            c_block,
            d_block,
            frames=None if frames is None else block_frames,
            frame_offset=start,
            pixel_size_A=pixel_size_A,
            time_s=None if time_s is None else np.asarray(time_s[start:stop]),
            config=config,
            ground_truth=truth,
            kernel=kernel,
        )
        column_parts.append(parts[0])
        frame_parts.append(parts[1])
    # Explicit meta: the kernel's own output on a tiny blank frame (cheap, no dask compute).
    blank = np.zeros((1, 16, 16), dtype=counts.dtype)
    meta_columns, meta_frames = analyze_block(
        blank,
        blank.astype(np.float32),
        frame_offset=0,
        pixel_size_A=pixel_size_A,
        time_s=np.zeros(1),
        config=config,
        ground_truth=None if ground_truth is None else ground_truth.iloc[:0],
        kernel=kernel,
    )
    return (
        dd.from_delayed(column_parts, meta=meta_columns.iloc[:0], divisions=None, verify_meta=False),
        dd.from_delayed(frame_parts, meta=meta_frames.iloc[:0], divisions=None, verify_meta=False),
    )
