"""Streaming: peak training memory does not grow with the store size.

Each run trains in its own interpreter and reports how far its peak RSS rose above
a warmed-up baseline (imports, one optimiser step, the store's coords opened: the
fixed costs that do not depend on the data). The test trains on a small and a 6×
larger store and checks that the extra store data adds (almost) nothing to that
rise (measured 31 MB vs 35 MB), and that the rise stays within a bound three times
smaller than the large store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from lowdose.store import schema
from tests.unit.training.synthetic_store import OPTICS

pytestmark = pytest.mark.slow

SMALL_IMAGES = 8
LARGE_IMAGES = 48
SIZE = 1024
MEMORY_BOUND_MB = 64
STORE_GROWTH_ALLOWANCE_MB = 16

# The training runs in a fresh interpreter so that only its own memory is measured.
# Its peak is VmHWM (the high-water mark of *this* process's address space), reset
# to the current RSS after the imports with /proc/self/clear_refs. getrusage's
# ru_maxrss is no use here: after fork+exec Linux carries the parent's high-water
# mark into the child's ru_maxrss, so under a big pytest (xdist) worker it reported
# the parent's ~800 MB as the training's peak.
SCRIPT = r"""
import json, sys
import torch, xarray, zarr, scipy.ndimage, tqdm  # everything train() imports lazily
import lowdose.store.simulation_set
from lowdose.training.config import TrainingConfig
from lowdose.training.trainer import train

def status_kb(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")

torch.set_num_threads(1)
config = TrainingConfig.model_validate(json.loads(sys.argv[1]))
# Warm-up, so the baseline holds the fixed costs that do not depend on the data: the
# lazy imports of an optimiser step (torch._dynamo) and of opening the store
# (xarray/dask; reads only the per-image coords): ~90 + ~25 MB measured.
from lowdose.models.registry import build
from lowdose.training.data import resolve_splits
warm = build("compact", unshuffle=2, scales=2, base_channels=4, max_channels=8)
optimizer = torch.optim.Adam(warm.parameters())
warm(torch.rand(2, 1, 64, 64)).square().mean().backward()
optimizer.step()
del warm, optimizer
resolve_splits(config.data, config.selection, config.split_fractions, config.split_seed)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset VmHWM to the current RSS
baseline = status_kb("VmRSS") * 1024
result = train(config, sys.argv[2], progress=False, write_artefact=False)
peak = status_kb("VmHWM") * 1024
print(json.dumps({"baseline": baseline, "peak": peak, "steps": result.steps}))
"""


def _store(path: Path, n: int) -> Path:
    tile = (0.45 + 0.05 * np.sin(np.arange(64) / 5.0)[:, None] * np.cos(np.arange(64) / 7.0)[None, :]).astype(
        np.float32
    )
    image = np.tile(tile, (SIZE // 64, SIZE // 64))
    ds = xr.Dataset(
        {
            "clean": (("image", "y", "x"), np.broadcast_to(image, (n, SIZE, SIZE))),
            "done": (("image",), np.ones(n, dtype=np.uint8)),
        },
        coords={
            "image": np.arange(n),
            **{c: ("image", np.zeros(n)) for c in ("defocus_nm", "tilt_x_deg", "tilt_y_deg")},
            "support_thickness_nm": ("image", np.full(n, 3.0)),
            "particle": ("image", np.array(["PtNp1"] * n, dtype=object)),
            "defect": ("image", np.array(["D0"] * n, dtype=object)),
            "contrast": ("image", np.array(["white"] * n, dtype=object)),
            "model_id": ("image", np.arange(n)),
        },
        attrs=dict(OPTICS),
    )
    ds = schema.stamp(ds, schema.Layout.SIMULATION_SET)
    ds.to_zarr(
        path, mode="w", zarr_format=3, consolidated=False, encoding={"clean": {"chunks": (1, SIZE, SIZE)}}
    )
    return path


def _peak_growth_mb(tmp_path: Path, n: int) -> float:
    store = _store(tmp_path / f"set{n}.zarr", n)
    config = {
        "data": str(store),
        "split_fractions": [0.8, 0.1, 0.1],
        "model": "compact",
        "model_options": {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8},
        "patch_size": 64,
        "batch_size": 8,
        "steps": 8,
        "validate_every": 8,
        "validation_patches": 2,
        "validation_patch_size": 64,
        "checkpoint_every": 8,
        "torch_threads": 1,
        "loader_threads": 2,
        "prefetch": 2,
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config), str(tmp_path / f"run{n}")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["steps"] == 8
    return float((report["peak"] - report["baseline"]) / 2**20)


def test_peak_memory_does_not_scale_with_store_size(tmp_path: Path) -> None:
    large_mb = LARGE_IMAGES * SIZE * SIZE * 4 / 2**20
    small = _peak_growth_mb(tmp_path, SMALL_IMAGES)
    large = _peak_growth_mb(tmp_path, LARGE_IMAGES)
    # 64 samples (8 steps × 8) touch most images of the large store.
    assert large - small < STORE_GROWTH_ALLOWANCE_MB, f"{small:.0f} MB → {large:.0f} MB"
    assert MEMORY_BOUND_MB <= large_mb / 3
    assert large < MEMORY_BOUND_MB, f"peak RSS grew by {large:.0f} MB on a {large_mb:.0f} MB store"
