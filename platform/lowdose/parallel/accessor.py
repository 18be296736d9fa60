"""The ``.lowdose`` xarray accessor: lazy denoising and analysis in notebooks.

>>> import lowdose.parallel.accessor  # registers the accessor  # doctest: +SKIP
>>> series = lowdose.store.series.open_series("run.zarr")  # doctest: +SKIP
>>> denoised = series.lowdose.denoise()           # lazy DenoisedSeries  # doctest: +SKIP
>>> columns = series.lowdose.columns(denoised)     # lazy dask dataframe  # doctest: +SKIP
>>> one_second = series.lowdose.time_average(40)   # doctest: +SKIP

Nothing is computed until ``.compute()`` / ``.load()``; the same kernels as the
pipeline run per frame chunk. No science here; never imports torch at module
level.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd


@xr.register_dataset_accessor("lowdose")
class LowdoseAccessor:
    """Lazy lowdose operations on a FrameSeries (or a merged FrameSeries + DenoisedSeries)."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def denoise(self, model: Any = "default", **kwargs: Any) -> xr.Dataset:
        """Lazy DenoisedSeries (see :func:`lowdose.parallel.denoise.denoise_series`)."""
        from lowdose.parallel.denoise import denoise_series

        return denoise_series(self._ds, model, **kwargs)

    def _denoised(self, denoised: xr.Dataset | xr.DataArray | None, model: Any) -> xr.DataArray:
        if denoised is None:
            if "denoised" in self._ds:
                return _frame_first(self._ds["denoised"])
            return self.denoise(model)["denoised"]
        if isinstance(denoised, xr.Dataset):
            if "denoised" not in denoised:
                raise LowdoseInputError(
                    "lowdose accessor: the denoised dataset has no 'denoised' variable "
                    "(expected a DenoisedSeries)"
                )
            return _frame_first(denoised["denoised"])
        if not isinstance(denoised, xr.DataArray):
            raise LowdoseInputError(
                "lowdose accessor: denoised must be a DenoisedSeries dataset, its 'denoised' DataArray "
                f"or None (denoise here), got {type(denoised).__name__}"
            )
        return _frame_first(denoised)

    def analyze(
        self,
        denoised: xr.Dataset | xr.DataArray | None = None,
        *,
        model: Any = "default",
        config: Any = None,
        ground_truth: pd.DataFrame | str | Path | None = None,
        kernel: Any = None,
    ) -> tuple[dd.DataFrame, dd.DataFrame]:
        """Lazy ``(ColumnTable, FrameTable)`` dask dataframes, one partition per frame chunk.

        Parameters
        ----------
        denoised
            The denoised frames; default the dataset's own ``denoised`` variable,
            else ``self.denoise(model)``.
        model
            Used only when the denoised frames have to be computed.
        config
            ``AnalysisConfig`` (or a dict of its fields).
        ground_truth
            Ground-truth column table (or its Parquet path) with a ``frame`` column.
            ``lowdose analyze``/``run`` read ``NAME.columns.parquet`` beside a series
            ``NAME.zarr`` by themselves; pass it here for the same tables (the true Pt
            columns also set the particle region: see :mod:`lowdose.analysis.frame`).
        kernel
            Override the per-frame analysis kernel.

        Frames are numbered by the dataset's ``frame`` coordinate (the series' own
        frame numbers, also after ``.isel``/``.sel``), and ground truth is matched by it.
        """
        import pandas as pd

        from lowdose.parallel.analyze import analysis_config, analyze_arrays
        from lowdose.parallel.denoise import as_frame_chunks, series_counts

        counts = series_counts(self._ds, "lowdose accessor")
        pixel_size = self._ds.attrs.get("pixel_size_A")
        if (
            not isinstance(pixel_size, numbers.Real)
            or isinstance(pixel_size, bool)
            or not float(pixel_size) > 0
        ):
            raise LowdoseInputError(
                f"lowdose accessor: the dataset's attrs['pixel_size_A'] is {pixel_size!r}; expected the "
                "pixel size in Å > 0 (as a FrameSeries from lowdose.store.series.open_series records it)"
            )
        den = self._denoised(denoised, model)
        if den.shape != counts.shape:
            raise LowdoseInputError(
                f"lowdose accessor: denoised frames {den.shape} do not match the counts {counts.shape}"
            )
        if "frame" in den.coords and "frame" in counts.coords:
            if not np.array_equal(den["frame"].values, counts["frame"].values):
                raise LowdoseInputError(
                    "lowdose accessor: the denoised frames are not the dataset's frames (their 'frame' "
                    "coordinates differ); select the same frames of both, e.g. den.sel(frame=ds.frame)"
                )
        data = as_frame_chunks(counts, self._ds.attrs)
        truth = pd.read_parquet(ground_truth) if isinstance(ground_truth, str | Path) else ground_truth
        time_s = self._ds["time_s"].values if "time_s" in self._ds.coords else None
        frames = self._ds["frame"].values if "frame" in self._ds.coords else None
        return analyze_arrays(
            data,
            _as_dask(den.data, data.chunks),
            pixel_size_A=float(pixel_size),
            time_s=time_s,
            frames=frames,
            config=analysis_config(config),
            ground_truth=truth,
            kernel=kernel,
        )

    def columns(self, denoised: xr.Dataset | xr.DataArray | None = None, **kwargs: Any) -> dd.DataFrame:
        """Lazy ColumnTable (one row per detected column per frame); arguments as :meth:`analyze`."""
        return self.analyze(denoised, **kwargs)[0]

    def frames(self, denoised: xr.Dataset | xr.DataArray | None = None, **kwargs: Any) -> dd.DataFrame:
        """Lazy FrameTable (one row per frame); arguments as :meth:`analyze`."""
        return self.analyze(denoised, **kwargs)[1]

    def time_average(self, n: int = 40) -> xr.DataArray:
        """Lazy sums of ``n`` consecutive frames (see :func:`lowdose.store.align.time_average`).

        Each sum's ``frame`` is its first frame's number (the pipeline's
        ``frames_avgN.parquet`` numbers the windows 0, 1, ...); a trailing partial block
        is dropped. To analyse sums (rates scaled by ``n``), use ``lowdose analyze
        --time-average N`` or ``time_average_frames`` in a pipeline.
        """
        from lowdose.store.align import time_average

        return time_average(self._ds, n)


def _frame_first(denoised: xr.DataArray) -> xr.DataArray:
    if set(denoised.dims) != {"frame", "y", "x"}:
        raise LowdoseInputError(
            f"lowdose accessor: denoised has dims {denoised.dims}; expected (frame, y, x)"
        )
    return denoised.transpose("frame", "y", "x")


def _as_dask(values: Any, chunks: Any) -> Any:
    import dask.array as da

    return values if isinstance(values, da.Array) else da.from_array(values, chunks=chunks)
