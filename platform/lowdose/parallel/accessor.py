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

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
                return self._ds["denoised"]
            return self.denoise(model)["denoised"]
        if isinstance(denoised, xr.Dataset):
            if "denoised" not in denoised:
                raise LowdoseInputError(
                    "lowdose accessor: the denoised dataset has no 'denoised' variable "
                    "(expected a DenoisedSeries)"
                )
            return denoised["denoised"]
        if not isinstance(denoised, xr.DataArray):
            raise LowdoseInputError(
                "lowdose accessor: denoised must be a DenoisedSeries dataset, its 'denoised' DataArray "
                f"or None (denoise here), got {type(denoised).__name__}"
            )
        return denoised

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
        kernel
            Override the per-frame analysis kernel.
        """
        import pandas as pd

        from lowdose.parallel.analyze import analysis_config, analyze_arrays

        if "counts" not in self._ds:
            raise LowdoseInputError(
                "lowdose accessor: the dataset has no 'counts' variable (expected a FrameSeries)"
            )
        counts = self._ds["counts"].data
        den = self._denoised(denoised, model).data
        truth = pd.read_parquet(ground_truth) if isinstance(ground_truth, str | Path) else ground_truth
        time_s = self._ds["time_s"].values if "time_s" in self._ds.coords else None
        return analyze_arrays(
            _as_dask(counts),
            _as_dask(den),
            pixel_size_A=float(self._ds.attrs["pixel_size_A"]),
            time_s=time_s,
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
        """Lazy sums of ``n`` consecutive frames (see :func:`lowdose.store.align.time_average`)."""
        from lowdose.store.align import time_average

        return time_average(self._ds, n)


def _as_dask(values: Any) -> Any:
    import dask.array as da

    return values if isinstance(values, da.Array) else da.from_array(values, chunks=(-1, -1, -1))
