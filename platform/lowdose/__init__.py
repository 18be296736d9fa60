"""lowdose: ultra-low-dose, time-resolved TEM at scale.

Simulate training data (``lowdose.physics``), store it and experimental frame
series as chunked Zarr (``lowdose.store``), train denoisers on streamed chunks
(``lowdose.models``, ``lowdose.training``), and map denoising and the per-column
likelihood analysis over long series on Dask (``lowdose.parallel``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lowdose")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
