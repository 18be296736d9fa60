import copy
import json
import os
from pathlib import Path

import pytest

from lowdose.bench import STAGES, markdown_table, stage_rows, target, validate_report
from lowdose.parallel.bench import ProcessPeaks, task_split


def _speed() -> dict:
    return {
        "median_s": 1.0,
        "min_s": 0.9,
        "max_s": 1.1,
        "repeats": 3,
        "flops": 1e9,
        "gflop_per_s": 1.0,
        "cpu_gflop_per_s": 1.1,
        "fraction_of_conv_roofline": 0.5,
        "cpu_fraction_of_conv_roofline": 0.55,
    }


def _summary(value: float) -> dict:
    return {"median": value, "min": value, "max": value, "spread": 0.0, "repeats": 1}


def _report() -> dict:
    t = [target("x >= 0.5", 0.7, 0.5)]
    stages = {
        "simulate": {
            "preset": "tiny",
            "structures": 1,
            "grid_images_per_hour": 10.0,
            "bare": {
                "images_per_hour": 11.0,
                "split_s": {"structure": 0.1, "potential": 1.0, "multislice": 2.0, "imaging": 0.5},
                "split_fraction": {"structure": 0.03, "potential": 0.28, "multislice": 0.55, "imaging": 0.14},
            },
            "grid_worker_peak_rss_MB": {"tcp://a": 300.0},
        },
        "ingest": {
            "ingest_MB_per_s": _summary(100.0),
            "copy_MB_per_s": _summary(1000.0),
            "compression_ratio": 5.9,
            "entropy_bound_ratio": 6.3,
        },
        "train": {
            "streaming_samples_per_s": _summary(9.0),
            "in_memory_samples_per_s": _summary(10.0),
            "ratio": _summary(0.9),
            "sampler_s_per_batch": _summary(0.1),
        },
        "denoise": {
            "roofline_conv3x3": {"gflop_per_s": 2.0, "best_channels": 64},
            "roofline_matmul": {"gflop_per_s": 3.0, "n": 2048},
            "models": {name: {"512": _speed()} for name in ("default", "unet_paper", "small_unet", "dncnn")},
            "default_channels_last": {"512": _speed()},
            "paper_unet_flops_per_1024_frame": 2e12,
        },
        "pipeline": {
            "pipeline_frames_per_s": 2.0,
            "baseline_frames_per_s": 1.0,
            "ratio_per_core": 1.0,
            "n_cores": 2,
            "cpu_efficiency": 0.9,
            "split_s": {"read": 0.1, "denoise": 1.0, "analyse": 2.0, "write": 0.2},
            "split_fraction": {"read": 0.03, "denoise": 0.3, "analyse": 0.6, "write": 0.07},
            "peak_rss_MB": {"client": 200.0},
        },
        "memory": {
            "frame_shape": [64, 64],
            "runs": {
                "32": {
                    "client_peak_MB": 1.0,
                    "worker_peak_MB": {"w": 2.0},
                    "max_worker_peak_MB": 2.0,
                    "frames_per_s": 5.0,
                }
            },
            "worker_growth": 1.0,
            "client_growth": 1.0,
        },
    }
    for figures in stages.values():
        figures["targets"] = copy.deepcopy(t)
        figures["stage_seconds"] = 1.0
    machine = {"cpu_count": 2, "versions": {}, "date_utc": "2026-01-01T00:00:00Z", "processor": "cpu"}
    return {"schema": 2, "quick": True, "machine": machine, "stages": stages}


def test_validate_report_accepts_a_complete_report_and_every_stage_has_a_table():
    report = _report()
    validate_report(report)
    for stage in STAGES:
        rows = stage_rows(stage, report["stages"][stage])
        assert any(label.startswith("TARGET") for label, _ in rows)
    table = markdown_table(report)
    assert table.count("| x >= 0.5 | 0.7 >= 0.5 | yes |") == len(STAGES)


@pytest.mark.parametrize(
    ("stage", "path"),
    [
        ("pipeline", ("split_s", "write")),
        ("simulate", ("bare", "split_s", "multislice")),
        ("train", ("ratio",)),
        ("memory", ("worker_growth",)),
        ("denoise", ("models", "dncnn")),
        ("denoise", ("targets",)),
    ],
)
def test_validate_report_names_what_a_stage_lacks(stage, path):
    report = _report()
    node = report["stages"][stage]
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(ValueError, match=stage):
        validate_report(report)


def test_validate_report_rejects_a_speed_without_its_spread():
    report = _report()
    del report["stages"]["denoise"]["models"]["default"]["512"]["max_s"]
    with pytest.raises(ValueError, match="max_s"):
        validate_report(report)


def test_target_compares_in_the_stated_direction():
    assert target("t", 0.9, 0.85)["met"] is True
    assert target("t", 0.8, 0.85)["met"] is False
    assert target("t", 1.2, 1.1, at_most=True)["met"] is False
    assert target("t", 1.0, 1.1, at_most=True) == {
        "target": "t",
        "ratio": 1.0,
        "required": 1.1,
        "comparison": "<=",
        "met": True,
    }


def test_task_split_sums_compute_seconds_by_kind():
    def record(key, start, stop, action="compute"):
        return {"key": key, "startstops": [{"action": action, "start": start, "stop": stop}]}

    stream = [
        record(("lowdose-denoise-abc", 0, 0, 0), 0.0, 2.0),
        record("_chunk_task-123", 2.0, 5.0),
        record(("open_dataset-counts-xyz", 0, 0, 0), 0.0, 0.5),
        record(("lowdose-denoise-abc", 1, 0, 0), 1.0, 1.25, action="transfer"),
    ]
    assert task_split(stream) == {"read": 0.5, "denoise": 2.0, "chunk": 3.0, "transfer": 0.25}


def test_process_peaks_samples_this_process():
    with ProcessPeaks({"me": os.getpid()}, interval_s=0.01) as peaks:
        block = bytearray(32 * 2**20)  # 32 MiB held while sampled
        block[::4096] = b"x" * len(block[::4096])
    assert peaks.peaks_mb()["me"] > 32


def test_readme_performance_table_is_the_quoted_bench_runs_markdown() -> None:
    """The README quotes `lowdose bench --markdown` of docs/bench/bench-full.json, verbatim."""
    root = Path(__file__).resolve().parents[2]
    report = json.loads((root / "docs" / "bench" / "bench-full.json").read_text())
    validate_report(report)
    table = markdown_table(report).strip()
    assert "2 cores" in table.splitlines()[0]  # says on which machine
    assert table in (root / "README.md").read_text()


def test_a_target_with_a_same_run_ceiling_shows_it():
    report = _report()
    report["stages"]["ingest"]["targets"] = [target("ingest >= 0.5 x copy", 0.25, 0.5, ceiling=0.35)]
    validate_report(report)
    assert "| ingest | ingest >= 0.5 x copy | 0.25 >= 0.5 (at most 0.35 possible here) | **no** |" in (
        markdown_table(report)
    )
    rows = dict(stage_rows("ingest", report["stages"]["ingest"]))
    assert rows["TARGET ingest >= 0.5 x copy"] == "0.25 >= 0.5: NOT MET (at most 0.35 possible here)"
    assert "ceiling" not in target("x", 1.0, 0.5)
