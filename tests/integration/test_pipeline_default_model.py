"""The pipeline with the shipped default model (skipped until lowdose/weights/default holds one)."""

from __future__ import annotations

import pytest

from lowdose.models.artefact import DEFAULT_DIR, model_sha256
from lowdose.parallel.cluster import connect
from lowdose.parallel.outputs import open_denoised, read_table
from lowdose.parallel.pipeline import PipelineConfig, run_pipeline
from tests.unit.parallel.tiny import write_series

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DIR / "model.yaml").exists(),
    reason="no shipped default model in lowdose/weights/default yet",
)


@pytest.mark.slow
def test_default_model_end_to_end(tmp_path):
    series = write_series(tmp_path / "s.zarr", n_frames=4, shape=(128, 128), chunk_frames=2, with_truth=True)
    config = PipelineConfig.model_validate(
        {
            "series": series,
            "out": tmp_path / "out",
            "device": "cpu",
            "progress": False,
            "register_catalog": False,
        }
    )
    with connect("local", n_workers=1, threads_per_worker=1, processes=False, quiet=True) as client:
        result = run_pipeline(config, client)
    den = open_denoised(result.outputs["denoised"])
    assert den.attrs["model_sha256"] == model_sha256(DEFAULT_DIR)
    frames = read_table(result.outputs["frames"])
    assert frames["frame"].tolist() == [0, 1, 2, 3]
    assert {"surface_f1", "bulk_f1"} <= set(frames.columns)
