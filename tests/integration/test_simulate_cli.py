"""End to end: ``lowdose simulate --preset tiny`` on a LocalCluster, resume, and simulate-series."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from lowdose.parallel.cluster import connect
from lowdose.parallel.simulate import run_grid
from lowdose.physics.grid import load_preset
from lowdose.store import schema
from lowdose.store.simulation_set import done_images, open_simulation_set, read_ground_truth

pytestmark = pytest.mark.slow


def _lowdose(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, timeout=600, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "tiny.zarr"
    proc = _lowdose(
        "simulate", "--preset", "tiny", "--out", str(out), "--workers", "1", "--quiet", "--preview"
    )
    return out, proc


def test_tiny_preset_end_to_end(tiny_run):
    out, proc = tiny_run
    assert "6 images written" in proc.stdout
    ds = open_simulation_set(out)
    assert ds.sizes["image"] == 6 and done_images(out).all()
    assert set(map(str, ds["defect"].values)) == {"D0", "Ds"}
    assert {str(c) for c in ds["contrast"].values} <= {"white", "black", "mixed"}
    assert schema.ground_truth_path(out).exists()
    gt = read_ground_truth(out)
    assert set(gt["image"]) == set(range(6)) and (gt["element"] == "Pt").any()
    assert out.with_name(out.name + ".preview.png").stat().st_size > 10_000
    again = _lowdose("simulate", "--preset", "tiny", "--out", str(out), "--workers", "1", "--quiet")
    assert "0 images written, 6 already done" in again.stdout
    assert "(nothing left to do)" in again.stdout and "images/hour" not in again.stdout


def test_interrupted_run_resumes_byte_identical(tiny_run, tmp_path):
    reference, _ = tiny_run
    out = tmp_path / "resumed.zarr"
    config = load_preset("tiny")
    with connect(n_workers=1, processes=False, quiet=True) as client:
        first = run_grid(config, out, client, progress=False, max_structures=1)
        assert first.n_written == 3 and done_images(out).sum() == 3
        assert not schema.ground_truth_path(out).exists()  # not finalised while incomplete
        second = run_grid(config, out, client, progress=False)
    assert second.n_skipped == 3 and second.n_written == 3
    a, b = open_simulation_set(reference), open_simulation_set(out)
    assert a["clean"].values.tobytes() == b["clean"].values.tobytes()
    pd.testing.assert_frame_equal(read_ground_truth(reference), read_ground_truth(out))


def test_bad_invocations_exit_2(tmp_path, capsys):
    from tests.unit.inprocess import lowdose_main

    def _lowdose(*args, check=True):  # the console entry point, in this process
        return lowdose_main(capsys, *args)

    proc = _lowdose("simulate", "--out", str(tmp_path / "x.zarr"), check=False)
    assert proc.returncode == 2 and "exactly one of" in proc.stderr
    bad = tmp_path / "grid.yaml"
    bad.write_text("particles: [PtNp9]\n")
    proc = _lowdose("simulate", str(bad), "--out", str(tmp_path / "y.zarr"), check=False)
    assert proc.returncode == 2 and "grid.yaml" in proc.stderr and "Traceback" not in proc.stderr
    for flags, message in (
        (["--memory-limit", "lots"], "--memory-limit lots: expected a size"),
        (["--workers", "-2"], "--workers"),
    ):
        proc = _lowdose(
            "simulate", "--preset", "tiny", "--out", str(tmp_path / "z.zarr"), *flags, check=False
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "z.zarr").exists()  # refused before the store is made


def test_simulate_series_writes_frames_clean_and_ground_truth(tmp_path):
    from lowdose.store.series import open_series

    out = tmp_path / "series.zarr"
    args = (
        "simulate-series",
        "--out",
        str(out),
        "--frames",
        "40",
        "--size",
        "160",
        "--states",
        "3",
        "--quiet",
    )
    _lowdose(*args, "--seed", "4")
    ds = open_series(out)
    assert ds["counts"].dtype == np.uint8 and ds.sizes["frame"] == 40
    assert ds["clean"].dtype == np.float32 and ds.attrs["frame_rate_hz"] == 40.0
    assert np.allclose(np.diff(ds["time_s"].values), 0.025)
    clean = ds["clean"].values
    assert clean.min() >= 0 and 0.3 < float(clean.mean()) < 0.6  # vacuum is 0.45; columns modulate it
    assert not np.array_equal(clean[0], clean[-1])  # drift and surface events change the frames
    gt = pd.read_parquet(schema.ground_truth_path(out))
    assert set(gt["frame"]) == set(range(40))
    assert {"frame", "x_px", "y_px", "element", "n_atoms", "surface"} <= set(gt.columns)
    assert gt["state"].nunique() == 3
    # the noise is Poisson around the clean frames
    counts = ds["counts"].values.astype(float)
    assert abs(counts.mean() / clean.mean() - 1) < 0.02
    again = _lowdose(*args, "--seed", "4")
    assert "0 frames written" in again.stdout
    assert open_series(out)["counts"].values.tobytes() == ds["counts"].values.tobytes()
