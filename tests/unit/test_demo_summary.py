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


def test_summary_says_the_self_ensemble_size() -> None:
    assert "frames/s (denoise with tta 8 + analyse)" in "\n".join(_summary(tta=8).lines())


def test_a_work_folder_denoised_with_another_tta_is_refused_before_any_work(tmp_path: Path) -> None:
    import pytest

    from lowdose.demo import _check_earlier_tta, run_demo
    from lowdose.errors import LowdoseInputError
    from lowdose.parallel.outputs import Progress

    with pytest.raises(LowdoseInputError, match="tta must be one of"):
        run_demo(tmp_path / "never", tta=3)
    assert not (tmp_path / "never").exists()
    run = tmp_path / "w" / "run"
    _check_earlier_tta(tmp_path / "w", run, 8)  # nothing there yet: fine
    progress = Progress(run, "denoise")
    progress.folder.mkdir()
    progress.commit_manifest({"model_id": "m"})  # a run from before the option: tta 1
    _check_earlier_tta(tmp_path / "w", run, 1)
    with pytest.raises(LowdoseInputError, match="denoised with tta 1; run the demo with --tta 1"):
        _check_earlier_tta(tmp_path / "w", run, 8)
