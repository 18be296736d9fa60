"""SIGKILL whole ``lowdose`` processes at random points; the re-run must end byte-identical.

For each command (``ingest``, ``run``, ``train``, ``simulate``) an uninterrupted run in a subprocess
is the reference. Per seed, the same command is started and its whole process group
is killed at a random point of its work: once a seeded random amount of progress is
on disk (committed frames, finished chunks, logged steps) plus a seeded random delay
of up to one unit of work, so kills land between commits as well as on them. It is then re-run
to completion and compared with the reference file by file. Frames (training steps)
are counted: none may be lost or written twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.faults.conftest import duplicates_and_missing, kill_when, run_lowdose, run_ok, tree_bytes

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)


def _kill_point(seed: int, total: int, max_delay_s: float) -> tuple[int, float]:
    """Seeded (progress threshold in [0, total), delay in [0, max_delay_s) s) of one kill.

    ``max_delay_s`` is about one unit of progress (an append, a chunk, a step), so the
    kill lands anywhere inside the next unit rather than after the run.
    """
    rng = np.random.default_rng(seed)
    return int(rng.integers(0, total)), float(rng.uniform(0, max_delay_s))


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _committed_frames(store: Path) -> int:
    try:
        return int(json.loads((store / "zarr.json").read_text())["attributes"]["n_frames"])
    except (OSError, ValueError, KeyError):
        return 0


# --------------------------------------------------------------------------- ingest

N_INGEST_FRAMES, INGEST_CHUNK = 192, 4


@pytest.fixture(scope="module")
def ingest_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Path]:
    from tests.unit.store._synthetic import drifting_frames

    root = tmp_path_factory.mktemp("ingest-kill")
    rng = np.random.default_rng(5)
    shifts = np.cumsum(rng.integers(-1, 2, size=(N_INGEST_FRAMES, 2)), axis=0)
    frames = drifting_frames(shifts, (96, 96), 0.45, seed=5)
    source = root / "frames.npy"
    np.save(source, frames)
    reference = root / "reference.zarr"
    run_ok(_ingest_args(source, reference))
    return source, frames, reference


def _ingest_args(source: Path, out: Path) -> list[str]:
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
        str(INGEST_CHUNK),
        "--batch-frames",
        str(INGEST_CHUNK),
        "--quiet",
    ]


@pytest.mark.parametrize("seed", SEEDS)
def test_ingest_killed_then_rerun_is_byte_identical(ingest_reference, tmp_path, faults, seed):
    from lowdose.store.series import open_series, series_attrs

    source, frames, reference = ingest_reference
    out = tmp_path / "series.zarr"
    args = _ingest_args(source, out)
    partial = out.with_name(out.name + ".partial")
    threshold, delay = _kill_point(seed, N_INGEST_FRAMES, 0.05)
    kill = kill_when(args, lambda: _committed_frames(partial) >= threshold, delay)
    assert kill.landed, "ingest finished before the kill"
    committed = series_attrs(partial)["n_frames"] if (partial / "zarr.json").exists() else 0
    record = faults.inject(
        "SIGKILL lowdose ingest", f"at {kill.after_s:.2f} s, {committed}/{N_INGEST_FRAMES} frames committed"
    )

    run_ok(args)
    stored = open_series(out)["counts"].values
    same = [i for i in range(min(len(stored), N_INGEST_FRAMES)) if np.array_equal(stored[i], frames[i])]
    lost = N_INGEST_FRAMES - len(same)
    duplicated = max(len(stored) - N_INGEST_FRAMES, 0)
    identical = tree_bytes(out) == tree_bytes(reference)
    faults.judge(record, frames_lost=lost, frames_duplicated=duplicated, intact=identical)
    assert (lost, duplicated) == (0, 0)
    assert identical, sorted(set(tree_bytes(out)) ^ set(tree_bytes(reference)))
    assert not partial.exists()


# --------------------------------------------------------------------------- run (denoise + analyse)

N_RUN_FRAMES, RUN_CHUNK = 16, 2


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from lowdose.models.artefact import save_artefact
    from lowdose.models.registry import build
    from tests.unit.parallel.tiny import write_series

    root = tmp_path_factory.mktemp("run-kill")
    series = write_series(
        root / "s.zarr", n_frames=N_RUN_FRAMES, shape=(64, 64), chunk_frames=RUN_CHUNK, with_truth=True
    )
    model = save_artefact(
        root / "model",
        build("compact", base_channels=4, scales=2).eval(),
        name="compact",
        model_config={"base_channels": 4, "scales": 2},
    )
    reference = root / "reference"
    run_ok(["run", str(_run_yaml(root, series, model, reference)), "--quiet"])
    return series, model, reference


def _run_yaml(root: Path, series: Path, model: Path, out: Path) -> Path:
    config = {
        "series": str(series),
        "out": str(out),
        "model": str(model),
        "device": "cpu",
        "batch_frames": 2,
        "analysis": {"polarity": "bright"},
        "cluster": {"name": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False},
        "register_catalog": False,
    }
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("seed", SEEDS)
def test_run_killed_then_rerun_is_byte_identical(run_inputs, tmp_path, faults, seed):
    from lowdose.parallel.outputs import Progress, read_table

    series, model, reference = run_inputs
    out = tmp_path / "out"
    args = ["run", str(_run_yaml(tmp_path, series, model, out)), "--quiet"]
    n_chunks = N_RUN_FRAMES // RUN_CHUNK
    threshold, delay = _kill_point(seed, n_chunks, 0.3)
    kill = kill_when(args, lambda: _count(out / "_progress" / "analyze", "chunk-*.done") >= threshold, delay)
    assert kill.landed, "lowdose run finished before the kill"
    done = len(Progress(out, "analyze").done_chunks())
    record = faults.inject("SIGKILL lowdose run", f"at {kill.after_s:.2f} s, {done}/{n_chunks} chunks done")

    run_ok(args)
    frames = read_table(out / "frames.parquet")["frame"].tolist()
    lost, duplicated = duplicates_and_missing(frames, range(N_RUN_FRAMES))
    columns = read_table(out / "columns.parquet")
    identical = tree_bytes(out / "denoised.zarr") == tree_bytes(reference / "denoised.zarr") and all(
        (out / t).read_bytes() == (reference / t).read_bytes() for t in ("columns.parquet", "frames.parquet")
    )
    faults.judge(record, frames_lost=lost, frames_duplicated=duplicated, intact=identical)
    assert (lost, duplicated) == (0, 0)
    assert identical
    assert sorted(set(columns["frame"])) <= list(range(N_RUN_FRAMES))


# --------------------------------------------------------------------------- train

TRAIN_STEPS = 24


@pytest.fixture(scope="module")
def train_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.unit.training.synthetic_store import write_synthetic_set

    root = tmp_path_factory.mktemp("train-kill")
    store = write_synthetic_set(root / "set.zarr", n_structures=6, defoci=2, size=64)
    config = {
        "data": str(store),
        "split_fractions": [0.5, 0.25, 0.25],
        "model": "compact",
        "model_options": {"unshuffle": 2, "scales": 2, "base_channels": 4, "max_channels": 8},
        "patch_size": 32,
        "batch_size": 4,
        "steps": TRAIN_STEPS,
        "validate_every": 6,
        "validation_patches": 2,
        "validation_patch_size": 32,
        "checkpoint_every": 4,
        "torch_threads": 1,
        "loader_threads": 1,
        "prefetch": 2,
        "device": "cpu",
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    reference = root / "reference"
    run_ok(["train", str(path), "--out", str(reference), "--no-progress"])
    return path, reference


def _log(out: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("elapsed_s", None)  # wall time: the only field that may differ
    return records


def _weights(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))}


@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_then_resumed_is_byte_identical(train_inputs, tmp_path, faults, seed):
    config, reference = train_inputs
    out = tmp_path / "train"
    args = ["train", str(config), "--out", str(out), "--no-progress"]
    threshold, delay = _kill_point(seed, TRAIN_STEPS, 0.01)
    log = out / "log.jsonl"

    def logged() -> int:
        try:
            return log.read_text().count("\n")
        except OSError:
            return 0

    kill = kill_when(args, lambda: logged() >= threshold, delay)
    assert kill.landed, "lowdose train finished before the kill"
    checkpoint = out / "checkpoint" / "state.json"
    previous = out / "checkpoint.old" / "state.json"
    saved = next((json.loads(p.read_text())["step"] for p in (checkpoint, previous) if p.exists()), None)
    record = faults.inject(
        "SIGKILL lowdose train",
        f"at {kill.after_s:.2f} s, step {logged()} logged, checkpoint at step {saved}",
    )

    # What a user does: resume from the checkpoint; with none yet (killed before the
    # first one) --resume is a clear error, a plain re-run is refused (the log is there)
    # and --overwrite starts the run again.
    resumed = run_lowdose([*args, "--resume"])
    if saved is None:
        assert resumed.returncode == 2 and "no checkpoint" in resumed.stderr, resumed.stderr[-2000:]
        again = run_lowdose(args)
        assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr[-2000:]
        run_ok([*args, "--overwrite"])
    else:
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    records, expected = _log(out), _log(reference)
    lost, duplicated = duplicates_and_missing([r["step"] for r in records], range(1, TRAIN_STEPS + 1))
    identical = records == expected and _weights(out) == _weights(reference)
    faults.judge(record, frames_lost=lost, frames_duplicated=duplicated, intact=identical)
    assert (lost, duplicated) == (0, 0)
    assert records == expected
    assert _weights(out) == _weights(reference)


# --------------------------------------------------------------------------- simulate

# One seed only: a tiny-preset run (6 images, 384² multislice, one worker) costs ~20-30
# CPU-s, and the test needs a reference, a killed and a resumed run.
SIMULATE_SEEDS = (0,)
N_SIM_IMAGES = 6


@pytest.fixture(scope="module")
def simulate_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reference = tmp_path_factory.mktemp("simulate-kill") / "reference.zarr"
    args = ["simulate", "--preset", "tiny", "--out", str(reference), "--workers", "1", "--quiet"]
    run_ok(args, timeout=600)
    return reference


def _done(store: Path) -> int:
    from lowdose.store.simulation_set import done_images

    try:
        return int(done_images(store).sum())
    except Exception:  # the store may not exist or be mid-creation: nothing committed yet
        return 0


@pytest.mark.parametrize("seed", SIMULATE_SEEDS)
def test_simulate_killed_then_rerun_is_identical(simulate_reference, tmp_path, faults, seed):
    import pandas as pd

    from lowdose.store.simulation_set import open_simulation_set, read_ground_truth

    out = tmp_path / "sim.zarr"
    args = ["simulate", "--preset", "tiny", "--out", str(out), "--workers", "1", "--quiet"]
    threshold, delay = _kill_point(seed, N_SIM_IMAGES, 2.0)
    kill = kill_when(args, lambda: _done(out) >= max(threshold, 1), delay, timeout=600)
    assert kill.landed, "lowdose simulate finished before the kill"
    record = faults.inject(
        "SIGKILL lowdose simulate", f"at {kill.after_s:.2f} s, {_done(out)} of {N_SIM_IMAGES} images done"
    )
    run_ok(args, timeout=600)  # what a user does: run the same command again

    a, b = open_simulation_set(simulate_reference), open_simulation_set(out)
    done = [int(i) for i in np.flatnonzero(np.asarray(b["done"].values))] if "done" in b else []
    lost, duplicated = duplicates_and_missing(done, range(N_SIM_IMAGES)) if done else (0, 0)
    same_pixels = a["clean"].values.tobytes() == b["clean"].values.tobytes()
    same_coords = all(np.array_equal(a[c].values, b[c].values) for c in a.coords)
    truth_a, truth_b = read_ground_truth(simulate_reference), read_ground_truth(out)
    same_truth = truth_a.equals(truth_b)
    intact = same_pixels and same_coords and same_truth
    faults.judge(record, frames_lost=lost, frames_duplicated=duplicated, intact=intact)
    assert (lost, duplicated) == (0, 0)
    assert same_pixels and same_coords
    pd.testing.assert_frame_equal(truth_a, truth_b)
