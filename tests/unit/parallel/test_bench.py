import math

import pandas as pd
import torch

from lowdose.parallel.bench import llr_separation, pipeline_benchmark
from tests.unit.parallel.tiny import TinyConv, tiny_handle, write_series

torch.set_num_threads(1)


def test_llr_separation_counts_matches_and_misses():
    truth = pd.DataFrame({"frame": [0, 0, 1], "x_px": [10.0, 30.0, 10.0], "y_px": [10.0, 10.0, 10.0]})
    columns = pd.DataFrame(
        {
            "frame": [0, 0, 0, 1, 1, 2],
            "x_px": [10.5, 20.0, 90.0, 10.0, 15.0, 10.0],
            "y_px": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
            "llr": [0.01, -0.01, -0.01, 0.001, -0.001, 0.5],
        }
    )
    # pixel 0.1 Å → tolerance 6 px: frame 0 has one match, one miss inside the box and one
    # outside the box (ignored); frame 1 one match and one miss; frame 2 has no truth.
    out = llr_separation(columns, truth, pixel_size_A=0.1)
    assert out["n_real_columns"] == 2 and out["n_spurious_columns"] == 2
    assert out["frac_real_llr_above_threshold"] == 0.5
    assert out["frac_spurious_llr_below_threshold"] == 0.5


def test_benchmark_reports_throughput_and_scores(tmp_path):
    series = write_series(tmp_path / "s.zarr", n_frames=8, shape=(48, 48), chunk_frames=4, with_truth=True)
    report = pipeline_benchmark(
        series,
        tmp_path / "out",
        model=tiny_handle(TinyConv(seed=5)),
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        baseline_frames=2,
    )
    assert report["n_frames"] == 8 and report["n_cores"] == 1
    for key in (
        "pipeline_frames_per_s",
        "baseline_frames_per_s",
        "speedup",
        "peak_memory_MB",
        "cpu_efficiency",
    ):
        assert math.isfinite(report[key]) and report[key] > 0
    assert 0.0 <= report["median_surface_f1"] <= 1.0
    assert "frac_real_llr_above_threshold" in report
    # the bare loop runs half before and half after the pipeline
    assert report["baseline_frames"] == 2 and len(report["baseline_frames_per_s_before_after"]) == 2


def test_bare_loop_runs_the_frames_asked_for(tmp_path):
    from lowdose.parallel.bench import bare_loop

    series = write_series(tmp_path / "s.zarr", n_frames=8, shape=(48, 48), chunk_frames=4, with_truth=True)
    handle = tiny_handle(TinyConv(seed=5))
    middle = bare_loop(series, handle, n_frames=3, first_frame=3)  # crosses a chunk boundary
    tail = bare_loop(series, handle, first_frame=6)
    assert middle["frames"] == 3 and tail["frames"] == 2
    assert sum(middle["split_s"].values()) <= middle["elapsed_s"] + 1e-6
