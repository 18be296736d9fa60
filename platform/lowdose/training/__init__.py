"""Training denoisers on streamed SimulationSet patches (torch/numpy/zarr; never imports dask).

Entry point: :func:`lowdose.training.trainer.train` with a
:class:`lowdose.training.config.TrainingConfig`.
"""

from __future__ import annotations
