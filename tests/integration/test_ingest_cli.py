"""`lowdose ingest` / `lowdose align` end to end: exit codes, resume after a kill, bounded memory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from lowdose.store.series import open_series

REPO = Path(__file__).resolve().parents[2]


def lowdose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lowdose", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def test_ingest_then_align_cli(tmp_path: Path) -> None:
    from tests.unit.store._synthetic import drifting_frames

    truth = np.repeat(np.array([[0, 0], [1, -2], [3, 1]]), 40, axis=0)
    frames = drifting_frames(truth, (64, 64), 0.45, seed=1)
    tifffile.imwrite(tmp_path / "a.tif", frames[:50])
    tifffile.imwrite(tmp_path / "b.tif", frames[50:])
    out = tmp_path / "s.zarr"
    args = ["ingest", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--out", str(out), "--quiet"]
    run = lowdose(*args, "--pixel-size-A", "0.061", "--frame-rate-hz", "40", "--detector", "K3")
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{out}\n"  # stdout: the store path alone, for scripts
    stored_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    summary = run.stderr.splitlines()
    assert summary[0] == f"120 frames of 64 x 64 px, uint8; dose {frames.mean():.4g} e/px/frame measured"
    assert summary[1].startswith(f"stored {stored_mb:.3g} MB, {frames.nbytes / 1e6 / stored_mb:.2f}x smaller")
    assert summary[2].startswith("120 frames ingested in ") and summary[2].endswith("MB/s of source frames)")
    again = lowdose(*args, "--pixel-size-A", "0.061")
    assert again.returncode == 0 and again.stdout == f"{out}\n", again.stderr
    assert again.stderr.splitlines()[-1] == "already complete from the same sources: nothing written"
    other = lowdose(*args, "--pixel-size-A", "0.07")
    assert other.returncode == 2 and other.stdout == ""
    lines = [line for line in other.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pixel_size_A is 0.061 in the store but --pixel-size-A gave 0.07" in lines[0]
    run = lowdose("align", str(out), "--block-frames", "40")
    assert run.returncode == 0, run.stderr
    ds = open_series(out)
    np.testing.assert_array_equal(ds["counts"].values, frames)
    np.testing.assert_array_equal(ds["shift_y_px"].values, truth[:, 0])
    np.testing.assert_array_equal(ds["shift_x_px"].values, truth[:, 1])
    assert ds.attrs["detector"] == "K3"


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    data = np.random.default_rng(0).poisson(0.45, (8, 16, 16)).astype("float32")
    data[5, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", data)
    args = ["--pixel-size-A", "0.061", "--frame-rate-hz", "40", "--quiet"]
    run = lowdose("ingest", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "s.zarr"), *args)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nan.npy: frame 5" in lines[0], run.stderr
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_killed_ingest_resumes_to_identical_store(tmp_path: Path) -> None:
    frames = np.random.default_rng(2).poisson(0.45, (80, 32, 32)).astype("uint8")
    tifffile.imwrite(tmp_path / "a.tif", frames)
    out = tmp_path / "s.zarr"
    args = ["ingest", str(tmp_path / "a.tif"), "--out", str(out), "--quiet"]
    args += ["--pixel-size-A", "0.061", "--frame-rate-hz", "40", "--chunk-frames", "2", "--batch-frames", "2"]
    process = subprocess.Popen([sys.executable, "-m", "lowdose", *args], cwd=REPO, stderr=subprocess.PIPE)
    meta = tmp_path / "s.zarr.partial" / "zarr.json"
    committed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            committed = json.loads(meta.read_text())["attributes"]["n_frames"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            committed = 0
        if committed >= 4:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "ingest finished before it could be interrupted"
    assert not out.exists()
    run = lowdose(*args)
    assert run.returncode == 0, run.stderr
    ds = open_series(out)
    np.testing.assert_array_equal(ds["counts"].values, frames)
    assert ds.attrs["ingest_state"] == "complete"


# VmHWM is the peak RSS of this process image only (ru_maxrss would inherit the forking
# pytest worker's high-water mark across exec).
MEMORY_SCRIPT = """
import sys
from lowdose.store.ingest import ingest
ingest([sys.argv[1]], sys.argv[2])
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))
"""


@pytest.mark.slow
def test_ingest_of_2GB_tiff_keeps_peak_rss_below_1GB(tmp_path: Path) -> None:
    from lowdose.store.bench import write_poisson_tiff

    source = write_poisson_tiff(tmp_path / "big.tif", 1000, (1024, 1024), dtype="uint16")
    assert source.stat().st_size > 2.0e9
    out = tmp_path / "big.zarr"
    try:
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(source), str(out)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr
        peak_rss_bytes = int(run.stdout.split()[-1]) * 1024  # Linux reports KiB
        assert peak_rss_bytes < 1.0e9, f"peak RSS {peak_rss_bytes / 1e6:.0f} MB"
        ds = open_series(out)
        assert ds.sizes["frame"] == 1000 and ds["counts"].dtype == "uint8"
        with tifffile.TiffFile(source) as tif:
            np.testing.assert_array_equal(ds["counts"][997].values, tif.pages[997].asarray())
    finally:
        source.unlink(missing_ok=True)
