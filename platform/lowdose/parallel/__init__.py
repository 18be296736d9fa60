"""Dask orchestration: clusters, and the mapping of kernels over chunks.

Never contains science: every computation here is a call into ``physics``,
``models`` or ``analysis``. May import dask, distributed and (inside worker
functions) torch.
"""
