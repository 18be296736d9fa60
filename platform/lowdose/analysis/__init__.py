"""Per-frame analysis kernels: atomic columns, likelihoods, metrics, baselines, filters.

Everything here works on one in-memory frame (numpy/scipy/scikit-image, pandas for
tables); ``lowdose.parallel`` maps these kernels over frames. This package never
imports dask; only :mod:`lowdose.analysis.explain` imports torch.
"""
