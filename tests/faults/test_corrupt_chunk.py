"""Bytes flipped in a chunk file: the read fails naming the chunk, and nothing is denoised from it.

Every lowdose array ends its codec pipeline with a crc32c checksum
(:mod:`lowdose.store.integrity`). Flipping bytes inside one chunk file of a
FrameSeries, a DenoisedSeries or a SimulationSet must raise a ``StoreError`` naming
the store, the array and the chunk key. Through ``lowdose run`` it ends as one
``lowdose: error:`` line (exit 2; distributed's own log of the failed task comes
before it), and the corrupt chunk gets no denoised frames and no completion marker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.faults.conftest import run_lowdose

pytestmark = pytest.mark.slow


def flip_bytes(chunk_file: Path, seed: int, n: int = 4) -> list[int]:
    """XOR ``n`` bytes at seeded positions inside ``chunk_file``; return the positions."""
    data = bytearray(chunk_file.read_bytes())
    positions = sorted(np.random.default_rng(seed).choice(len(data), size=n, replace=False).tolist())
    for p in positions:
        data[p] ^= 0xFF
    chunk_file.write_bytes(bytes(data))
    return positions


def test_corrupt_frame_chunk_is_named_and_never_denoised(tmp_path: Path, faults) -> None:
    from lowdose.errors import StoreError
    from lowdose.models.artefact import save_artefact
    from lowdose.models.registry import build
    from lowdose.parallel.outputs import Progress, open_denoised
    from lowdose.store.series import open_series
    from tests.unit.parallel.tiny import write_series

    series = write_series(tmp_path / "s.zarr", n_frames=12, shape=(64, 64), chunk_frames=4)
    positions = flip_bytes(series / "counts" / "c" / "1" / "0" / "0", seed=1)
    record = faults.inject("corrupt FrameSeries chunk", f"counts/c/1/0/0, bytes {positions} flipped")

    with pytest.raises(StoreError, match=r"s\.zarr: corrupt chunk counts/c/1/0/0: checksum mismatch"):
        open_series(series)["counts"].load()
    np.testing.assert_array_equal(  # the other chunks still read
        open_series(series)["counts"][8:].values.shape, (4, 64, 64)
    )

    model = save_artefact(
        tmp_path / "model",
        build("compact", base_channels=4, scales=2).eval(),
        name="compact",
        model_config={"base_channels": 4, "scales": 2},
    )
    out = tmp_path / "out"
    # Made beforehand, so the failed run keeps it even when the corrupt chunk fails before any
    # other chunk is done (a run removes an OUT it created itself while nothing in it is done).
    out.mkdir()
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "series": str(series),
                "out": str(out),
                "model": str(model),
                "device": "cpu",
                "analysis": {"polarity": "bright"},
                "cluster": {"name": "local", "n_workers": 1, "threads_per_worker": 1, "processes": False},
                "register_catalog": False,
            }
        )
    )
    proc = run_lowdose(["run", str(config), "--quiet"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    # distributed logs the failed task above it; lowdose's own report is one line, no traceback.
    assert "Traceback (most recent call last)" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("lowdose: error: "), proc.stderr[-3000:]
    assert "corrupt chunk counts/c/1/0/0" in lines[-1] and str(series) in lines[-1]
    # Never silently denoised: no marker and no frames for the corrupt chunk.
    assert 1 not in Progress(out, "denoise").done_chunks()
    assert 1 not in Progress(out, "analyze").done_chunks()
    written = open_denoised(out / "denoised.zarr")["denoised"][4:8].values
    detected = bool(np.isnan(written).all())
    faults.judge(record, intact=detected)
    assert detected


def test_corrupt_denoised_chunk_is_named(tmp_path: Path, faults) -> None:
    from lowdose.errors import StoreError
    from lowdose.parallel.outputs import create_denoised_store, open_denoised, write_denoised_chunk

    path = tmp_path / "denoised.zarr"
    create_denoised_store(
        path,
        n_frames=8,
        frame_shape=(32, 32),
        chunk_frames=4,
        dtype="float32",
        time_s=np.arange(8) / 40.0,
        attrs={"model_id": "m", "model_sha256": "0" * 64, "pixel_size_A": 0.061},
    )
    values = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    write_denoised_chunk(path, 0, values[:4])
    write_denoised_chunk(path, 4, values[4:])
    positions = flip_bytes(path / "denoised" / "c" / "0" / "0" / "0", seed=2)
    record = faults.inject("corrupt DenoisedSeries chunk", f"denoised/c/0/0/0, bytes {positions} flipped")
    with pytest.raises(StoreError, match=r"corrupt chunk denoised/c/0/0/0: checksum mismatch"):
        open_denoised(path)["denoised"].load()
    np.testing.assert_array_equal(open_denoised(path)["denoised"][4:].values, values[4:])
    faults.judge(record)


def test_corrupt_simulation_chunk_is_named_in_training_reads(tmp_path: Path, faults) -> None:
    import pandas as pd

    from lowdose.errors import StoreError
    from lowdose.store.simulation_set import create_simulation_set, open_simulation_set, write_images
    from lowdose.training.sampler import Augmentation, extract_patch, open_clean_array
    from tests.unit.training.synthetic_store import OPTICS

    path = tmp_path / "set.zarr"
    n = 4
    coords = {
        "defocus_nm": [1.0, 7.0, 1.0, 7.0],
        "tilt_x_deg": [0.0] * n,
        "tilt_y_deg": [0.0] * n,
        "support_thickness_nm": [3.0] * n,
        "support_surface": ["faceted"] * n,
        "particle": ["PtNp1"] * n,
        "defect": ["D0"] * n,
        "model_id": [0, 0, 1, 1],
        "structure_seed": [0, 0, 1, 1],
    }
    create_simulation_set(path, image_shape=(48, 48), coords=coords, attrs=dict(OPTICS), grid_digest="d")
    truth = pd.DataFrame({"x_px": [1.0], "y_px": [2.0], "element": ["Pt"], "n_atoms": [3], "surface": [True]})
    rng = np.random.default_rng(0)
    for model_id in (0, 1):
        clean = rng.random((2, 48, 48), dtype=np.float32)
        write_images(path, 2 * model_id, clean, ["white", "white"], truth, model_id=model_id)
    positions = flip_bytes(path / "clean" / "c" / "2" / "0" / "0", seed=3)
    record = faults.inject("corrupt SimulationSet chunk", f"clean/c/2/0/0, bytes {positions} flipped")

    with pytest.raises(StoreError, match=r"corrupt chunk clean/c/2/0/0: checksum mismatch"):
        open_simulation_set(path)["clean"].load()
    array = open_clean_array(path)
    extract_patch(array, 1, 16, np.random.default_rng(0), Augmentation.none())  # a sound image reads
    with pytest.raises(StoreError, match=r"corrupt chunk clean/c/2/0/0"):
        extract_patch(array, 2, 16, np.random.default_rng(0), Augmentation.none())
    faults.judge(record)
