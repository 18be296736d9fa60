"""Storage running out mid-write: one clear line naming the store, committed chunks intact, resumable.

``lowdose ingest`` runs in a subprocess under ``RLIMIT_FSIZE`` (a per-file size limit,
set with ``resource.setrlimit`` in ``preexec_fn``). The first frames are low-dose
Poisson counts whose chunks compress far below the limit; from frame 40 on the frames
are incompressible, so the first such chunk file cannot be written and the kernel
refuses the write with ``EFBIG`` — the same failure path as ``ENOSPC`` on a full disk.
Lifting the limit and re-running must resume after the committed frames and end
byte-identical to an ingest that never failed.
"""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from tests.faults.conftest import run_lowdose, run_ok, tree_bytes

pytestmark = pytest.mark.slow

FRAME_SHAPE, CHUNK = (96, 96), 4
N_QUIET, N_NOISY = 40, 24
LIMIT_BYTES = 16 * 1024
"""Above every low-dose chunk (≈ 6 KiB) and metadata file, below an incompressible chunk (36 KiB)."""


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def _args(source: Path, out: Path) -> list[str]:
    return [
        "ingest",
        str(source),
        "--out",
        str(out),
        "--pixel-size-A",
        "0.061",
        "--frame-rate-hz",
        "40",
        "--chunk-frames",
        str(CHUNK),
        "--batch-frames",
        str(CHUNK),
        "--quiet",
    ]


def test_ingest_out_of_space_is_one_line_and_resumes(tmp_path: Path, faults) -> None:
    from lowdose.store.series import open_series, series_attrs

    rng = np.random.default_rng(3)
    quiet = rng.poisson(0.45, (N_QUIET, *FRAME_SHAPE))
    noisy = rng.integers(0, 256, (N_NOISY, *FRAME_SHAPE))
    frames = np.concatenate([quiet, noisy]).astype("uint8")
    source = tmp_path / "frames.npy"
    np.save(source, frames)
    reference = tmp_path / "reference.zarr"
    run_ok(_args(source, reference))

    out = tmp_path / "series.zarr"
    proc = run_lowdose(_args(source, out), preexec_fn=_limit_file_size)
    record = faults.inject("storage full during lowdose ingest", f"RLIMIT_FSIZE {LIMIT_BYTES} B")
    lines = proc.stderr.strip().splitlines()
    partial = out.with_name(out.name + ".partial")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert str(partial) in lines[0] and "out of storage" in lines[0] and "File too large" in lines[0]

    # Everything committed before the failure is intact (and nothing past it is visible).
    committed = int(series_attrs(partial)["n_frames"])
    assert committed == N_QUIET
    stored = open_series(partial, allow_incomplete=True)["counts"].values
    intact_before = bool(np.array_equal(stored, frames[:committed]))
    assert intact_before
    assert not list(partial.rglob("*.partial")), "a torn chunk temp file was left behind"

    # Space is back: the same command resumes and ends as if nothing had happened.
    run_ok(_args(source, out))
    stored = open_series(out)["counts"].values
    lost = sum(not np.array_equal(a, b) for a, b in zip(stored, frames, strict=False))
    lost += max(len(frames) - len(stored), 0)
    identical = tree_bytes(out) == tree_bytes(reference)
    faults.judge(
        record, frames_lost=lost, frames_duplicated=max(len(stored) - len(frames), 0), intact=identical
    )
    assert lost == 0 and len(stored) == len(frames)
    assert identical
