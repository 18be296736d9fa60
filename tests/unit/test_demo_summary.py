"""The demo's summary says what a re-run reused instead of printing a time or "nan frames/s"."""

from pathlib import Path

from lowdose.demo import DemoSummary


def _summary(**changes: object) -> DemoSummary:
    fields: dict = {
        "workdir": Path("w"),
        "catalog": Path("w/catalog.yaml"),
        "n_frames": 48,
        "size_px": 512,
        "simulate_s": 11.94,
        "pipeline_frames_per_s": 8.081,
        "median_surface_f1": 0.7,
        "median_bulk_f1": 0.8,
        "verdict_counts": {"real": 1},
        "figure": Path("w/demo.png"),
    }
    return DemoSummary(**{**fields, **changes})


def test_first_run_prints_what_it_measured() -> None:
    text = "\n".join(_summary().lines())
    assert "simulation           11.9 s" in text
    assert "pipeline throughput  8.08 frames/s" in text


def test_rerun_prints_reused_not_nan() -> None:
    text = "\n".join(_summary(simulate_s=0.3, pipeline_frames_per_s=float("nan"), series_reused=True).lines())
    assert "simulation           reused the series" in text
    assert "pipeline throughput  reused the run" in text
    assert "nan" not in text and "0.3 s" not in text
