"""What the dashboard shows, computed from catalog entries: frames, columns, time series, exports.

A :class:`SeriesView` holds one FrameSeries entry and its linked products
(DenoisedSeries, ColumnTable, FrameTable) opened lazily through the catalog. It
reads only the zarr chunks of the frames asked for (with a small chunk cache so
that playback does not re-decode), keeps the per-column table as sorted numpy
arrays (one ``searchsorted`` per frame), and decimates the structural time series
to a few thousand points so a 100,000-frame series stays responsive.

No Panel/HoloViews/Bokeh here (the UI lives in :mod:`lowdose.dashboard.app`), and
never torch.
"""

from __future__ import annotations

import io
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lowdose.errors import StoreError
from lowdose.store.catalog import LowdoseCatalog, ProductKind

MAX_DISPLAY_PX = 512
"""Frames larger than this are block-averaged for display (exports keep full resolution)."""
MAX_CURVE_POINTS = 4000
"""Time-series curves are min/max-decimated to about this many points."""
VIEW_MODES = ("raw counts", "denoised", "time average", "likelihood map")
"""What the frame viewer can show."""
TIME_SERIES_FIELDS = (
    "n_surface",
    "n_spurious",
    "n_undecided",
    "n_real",
    "n_columns",
    "mean_llr",
    "particle_area_A2",
    "counts",
    "surface_f1",
)
"""FrameTable columns offered as time series (those present are shown)."""
LLR_RADIUS_A = 0.6
"""Disc radius of the likelihood map (the paper uses R < 0.7 Å)."""


class _ChunkCache:
    """Frames of one lazy (frame, y, x) DataArray, read a zarr chunk at a time and cached."""

    def __init__(self, array: Any, capacity: int = 3):
        self.array = array
        self.capacity = capacity
        chunks = getattr(array, "chunks", None)
        sizes = chunks[0] if chunks else (array.sizes["frame"],)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def frame(self, index: int) -> np.ndarray:
        block = int(np.searchsorted(self.starts, index, side="right") - 1)
        if block not in self.blocks:
            lo, hi = int(self.starts[block]), int(self.starts[block + 1])
            self.blocks[block] = np.asarray(self.array.isel(frame=slice(lo, hi)).values)
            while len(self.blocks) > self.capacity:
                self.blocks.popitem(last=False)
        self.blocks.move_to_end(block)
        return self.blocks[block][index - int(self.starts[block])]

    def mean(self, first: int, last: int) -> np.ndarray:
        """Mean of frames ``first..last`` inclusive (reads only their chunks)."""
        if last - first < 64:
            return np.mean([self.frame(i).astype(np.float32) for i in range(first, last + 1)], axis=0)
        return np.asarray(
            self.array.isel(frame=slice(first, last + 1)).astype("float32").mean("frame").values
        )


def decimate(
    x: np.ndarray, y: np.ndarray, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Min/max decimation: keep each bucket's extremes so spikes survive (NaNs ignored)."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    y_filled = np.where(np.isnan(y), np.nanmean(y) if np.isfinite(y).any() else 0.0, y)
    lo_idx = np.array([e0 + np.argmin(y_filled[e0:e1]) for e0, e1 in itertools.pairwise(edges)])
    hi_idx = np.array([e0 + np.argmax(y_filled[e0:e1]) for e0, e1 in itertools.pairwise(edges)])
    keep = np.unique(np.concatenate([lo_idx, hi_idx]))
    return x[keep], y[keep]


def block_reduce(image: np.ndarray, max_px: int = MAX_DISPLAY_PX) -> tuple[np.ndarray, int]:
    """Block-average ``image`` by an integer factor so that it fits ``max_px``; return it and the factor."""
    factor = int(np.ceil(max(image.shape) / max_px))
    if factor <= 1:
        return image, 1
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    view = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    return np.nanmean(view, axis=(1, 3)), factor


@dataclass
class FrameColumns:
    """The detected columns of one frame."""

    x_px: np.ndarray
    y_px: np.ndarray
    llr: np.ndarray
    verdict: np.ndarray
    surface: np.ndarray


class SeriesView:
    """One FrameSeries and its linked products, opened from a catalog.

    Parameters
    ----------
    catalog
        The validated catalog.
    series
        Name of a FrameSeries entry.
    products
        Optional explicit choice ``{kind: entry name}``; by default the first entry
        of each kind linked to ``series`` (metadata ``series``) that is per frame (tables
        of a time-averaged analysis, metadata ``frames_per_sum``, number their rows by
        window, not by frame).
    """

    def __init__(self, catalog: LowdoseCatalog, series: str, products: dict[str, str] | None = None):
        self.catalog = catalog
        self.series = series
        linked = catalog.products_of(series)
        per_frame = {
            kind: [name for name in names if "frames_per_sum" not in catalog.entries[name].metadata]
            for kind, names in linked.items()
        }
        chosen = {kind: names[0] for kind, names in per_frame.items() if names}
        chosen.update({k: v for k, v in (products or {}).items() if v})
        self.products = chosen
        self.problems: list[str] = []
        ds = catalog.open(series)
        self.counts = _ChunkCache(ds["counts"])
        self.n_frames = len(self.counts)
        self.shape = (int(ds.sizes["y"]), int(ds.sizes["x"]))
        self.attrs = dict(ds.attrs)
        self.pixel_size_A = float(ds.attrs.get("pixel_size_A", 1.0))
        self.time_s = np.asarray(ds["time_s"].values) if "time_s" in ds.coords else np.arange(self.n_frames)
        self.denoised: _ChunkCache | None = None
        self.frame_table: pd.DataFrame | None = None
        self._columns: dict[str, np.ndarray] | None = None
        self._offsets: np.ndarray | None = None
        self._load_products()

    def _try_open(self, kind: ProductKind) -> Any:
        name = self.products.get(str(kind))
        if name is None:
            return None
        try:
            return self.catalog.open(name)
        except StoreError as err:
            self.problems.append(str(err))
            return None

    def _load_products(self) -> None:
        den = self._try_open(ProductKind.DENOISED_SERIES)
        if den is not None:
            if den.sizes.get("frame") != self.n_frames or (den.sizes["y"], den.sizes["x"]) != self.shape:
                self.problems.append(
                    f"{self.products['DenoisedSeries']}: grid differs from {self.series}; ignored"
                )
            else:
                self.denoised = _ChunkCache(den["denoised"])
        table = self._try_open(ProductKind.FRAME_TABLE)
        if table is not None:
            self.frame_table = table.sort_values("frame").reset_index(drop=True)
        cols = self._try_open(ProductKind.COLUMN_TABLE)
        if cols is not None:
            cols = cols.sort_values("frame", kind="stable")
            self._columns = {
                "frame": cols["frame"].to_numpy(np.int64),
                "x_px": cols["x_px"].to_numpy(np.float64),
                "y_px": cols["y_px"].to_numpy(np.float64),
                "llr": cols["llr"].to_numpy(np.float64),
                "verdict": cols["verdict"].astype(str).to_numpy(),
                "surface": cols["surface"].to_numpy(bool),
            }
            self._offsets = np.searchsorted(self._columns["frame"], np.arange(self.n_frames + 1))

    @property
    def has_columns(self) -> bool:
        """Whether a ColumnTable is loaded."""
        return self._columns is not None

    def columns_at(self, frame: int) -> FrameColumns:
        """The columns detected in ``frame`` (empty arrays without a ColumnTable)."""
        if self._columns is None or self._offsets is None:
            empty = np.empty(0)
            return FrameColumns(empty, empty, empty, np.empty(0, dtype=str), np.empty(0, dtype=bool))
        lo, hi = int(self._offsets[frame]), int(self._offsets[frame + 1])
        c = self._columns
        return FrameColumns(
            c["x_px"][lo:hi], c["y_px"][lo:hi], c["llr"][lo:hi], c["verdict"][lo:hi], c["surface"][lo:hi]
        )

    def image(self, mode: str, frame: int, n_average: int = 8) -> np.ndarray:
        """The frame as shown in ``mode`` (one of :data:`VIEW_MODES`), full resolution, float32."""
        frame = int(np.clip(frame, 0, self.n_frames - 1))
        if mode == "raw counts":
            return self.counts.frame(frame).astype(np.float32)
        if mode == "time average":
            first = max(0, frame - max(1, n_average) + 1)
            return self.counts.mean(first, frame).astype(np.float32)
        if mode == "denoised":
            if self.denoised is None:
                raise StoreError(f"{self.series}: no DenoisedSeries linked in the catalog")
            return self.denoised.frame(frame).astype(np.float32)
        if mode == "likelihood map":
            if self._columns is None:
                raise StoreError(f"{self.series}: no ColumnTable linked in the catalog")
            from lowdose.analysis.likelihood import likelihood_map

            cols = self.columns_at(frame)
            radius_px = max(1.0, LLR_RADIUS_A / self.pixel_size_A) if self.pixel_size_A > 0 else 2.0
            radius_px = min(radius_px, max(self.shape) / 16)
            return likelihood_map(self.shape, cols.x_px, cols.y_px, cols.llr, radius_px).astype(np.float32)
        raise StoreError(f"unknown view mode {mode!r}; expected one of {VIEW_MODES}")

    def time_series_fields(self) -> list[str]:
        """FrameTable columns that can be plotted."""
        if self.frame_table is None:
            return []
        return [f for f in TIME_SERIES_FIELDS if f in self.frame_table.columns]

    def curve(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Decimated ``(frame, value)`` of a FrameTable column."""
        if self.frame_table is None or field not in self.frame_table.columns:
            return np.empty(0), np.empty(0)
        frames = self.frame_table["frame"].to_numpy(np.float64)
        values = self.frame_table[field].to_numpy(np.float64)
        return decimate(frames, values)

    def column_history(self, x_px: float, y_px: float, frame: int, max_step_px: float = 3.0) -> pd.DataFrame:
        """LLR across frames of the column nearest ``(x_px, y_px)`` in ``frame``.

        The click snaps to the nearest column of ``frame``; in every frame, the column
        nearest that position (within ``max_step_px``) is taken as the same column, so
        a column that drifts further than that drops out of its history. Returns
        ``frame, x_px, y_px, llr, verdict`` (empty without a ColumnTable or nearby column).
        """
        if self._columns is None:
            return pd.DataFrame(columns=["frame", "x_px", "y_px", "llr", "verdict"])
        here = self.columns_at(frame)
        if here.x_px.size:
            nearest = int(np.argmin(np.hypot(here.x_px - x_px, here.y_px - y_px)))
            x_px, y_px = float(here.x_px[nearest]), float(here.y_px[nearest])
        c = self._columns
        dist = np.hypot(c["x_px"] - x_px, c["y_px"] - y_px)
        close = dist <= max_step_px
        if not close.any():
            return pd.DataFrame(columns=["frame", "x_px", "y_px", "llr", "verdict"])
        idx = np.flatnonzero(close)
        order = np.lexsort((dist[idx], c["frame"][idx]))
        idx = idx[order]
        first = np.concatenate([[True], np.diff(c["frame"][idx]) != 0])
        idx = idx[first]
        return pd.DataFrame(
            {
                "frame": c["frame"][idx],
                "x_px": c["x_px"][idx],
                "y_px": c["y_px"][idx],
                "llr": c["llr"][idx],
                "verdict": c["verdict"][idx],
            }
        )

    def frame_table_csv(self) -> bytes:
        """The FrameTable (or, without one, the current per-frame time axis) as CSV bytes."""
        table = self.frame_table
        if table is None:
            table = pd.DataFrame({"frame": np.arange(self.n_frames), "time_s": self.time_s})
        return table.to_csv(index=False).encode()

    def columns_csv(self, frame: int) -> bytes:
        """The columns of one frame as CSV bytes."""
        cols = self.columns_at(frame)
        table = pd.DataFrame(
            {"frame": frame, "x_px": cols.x_px, "y_px": cols.y_px, "llr": cols.llr, "verdict": cols.verdict}
        )
        table["surface"] = cols.surface
        return table.to_csv(index=False).encode()

    def frame_png(self, mode: str, frame: int, n_average: int = 8, markers: bool = True) -> bytes:
        """The current view rendered as a PNG (matplotlib, full resolution, with column markers)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        image = self.image(mode, frame, n_average)
        fig = Figure(figsize=(6, 6 * self.shape[0] / self.shape[1]), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        cmap = "RdBu_r" if mode == "likelihood map" else "gray"
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        if markers:
            cols = self.columns_at(frame)
            for verdict, colour in VERDICT_COLOURS.items():
                sel = cols.verdict == verdict
                ax.scatter(cols.x_px[sel], cols.y_px[sel], s=12, c=colour, linewidths=0)
            ax.scatter(
                cols.x_px[cols.surface], cols.y_px[cols.surface], s=60, facecolors="none", edgecolors="k"
            )
        ax.set_axis_off()
        ax.text(2, 2, f"{self.series} frame {frame} ({mode})", color="yellow", va="top", fontsize=8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()


VERDICT_COLOURS = {"real": "#2ca02c", "undecided": "#ffbf00", "spurious": "#d62728"}
"""Marker colour of each verdict."""
