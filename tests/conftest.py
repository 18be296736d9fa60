"""Shared pytest fixtures and options for the lowdose suite."""

from __future__ import annotations

import os

import pytest

# The fault suite's session tally: a plugin (not tests/faults/conftest.py) so the xdist
# controller, which collects nothing, also prints its summary line.
pytest_plugins = ["tests.faults.ledger"]

# Each test process may start a LocalCluster; keep BLAS/torch from oversubscribing the 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
