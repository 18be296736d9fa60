"""`lowdose denoise`, `lowdose analyze` and `lowdose run` in-process, on a scheduler given by address."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from lowdose.cli import app
from lowdose.errors import StoreError
from lowdose.models.artefact import save_artefact
from lowdose.models.registry import build
from lowdose.parallel.outputs import open_denoised, read_table
from lowdose.store.catalog import CatalogError, open_catalog
from tests.unit.parallel.tiny import write_series

runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    series = write_series(root / "s.zarr", n_frames=6, shape=(64, 64), chunk_frames=3, with_truth=True)
    config = {"base_channels": 4, "scales": 1, "unshuffle": 2}
    model = save_artefact(
        root / "model", build("compact", **config).eval(), name="compact", model_config=config
    )
    return root, series, model


def test_denoise_then_analyze_equals_run(inputs, scheduler, tmp_path, monkeypatch):
    _, series, model = inputs
    common = ["--scheduler", scheduler, "--quiet", "--no-catalog"]
    out = tmp_path / "two-step"
    result = runner.invoke(app, ["denoise", str(series), "--out", str(out), "--model", str(model), *common])
    assert result.exit_code == 0, result.output
    den = out / "denoised.zarr"
    assert open_denoised(den)["denoised"].shape == (6, 64, 64)
    result = runner.invoke(
        app,
        ["analyze", str(series), "--denoised", str(den), "--out", str(out), "--time-average", "3", *common],
    )
    assert result.exit_code == 0, result.output
    assert "6 frames in 2 chunks" in result.output

    # Relative paths in the YAML (out, model, catalog) are relative to the YAML file, not
    # to the folder the command runs in.
    pipeline = tmp_path / "run.yaml"
    relative_model = os.path.relpath(model, tmp_path)
    spec = {
        "series": str(series),
        "out": "one-step",
        "model": relative_model,
        "catalog": "shared.yaml",
        "time_average_frames": 3,
    }
    pipeline.write_text(yaml.safe_dump(spec))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["run", str(pipeline), "--scheduler", scheduler, "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "shared.yaml").is_file() and not (elsewhere / "shared.yaml").exists()
    # The series lies outside the catalog's folder: recorded through "..", opened with the
    # common folder the run names as root (not refused as an absolute path).
    root = Path(os.path.commonpath([tmp_path, series]))
    assert f"--root {root}" in result.output
    with pytest.raises(CatalogError, match="escapes the catalog folder"):
        open_catalog(tmp_path / "shared.yaml")
    catalog = open_catalog(tmp_path / "shared.yaml", root=root)
    assert catalog.open("s").sizes["frame"] == 6 and len(catalog.open("one-step.frames")) == 6
    # the time-averaged tables are catalog entries too, marked by their frames per sum
    assert len(catalog.open("one-step.frames_avg3")) == 2
    assert catalog.entries["one-step.columns_avg3"].metadata["frames_per_sum"] == 3
    one = tmp_path / "one-step"
    np.testing.assert_array_equal(
        open_denoised(den)["denoised"].values, open_denoised(one / "denoised.zarr")["denoised"].values
    )
    for table in ("columns.parquet", "frames.parquet"):
        pd.testing.assert_frame_equal(read_table(out / table), read_table(one / table))
    frames = read_table(out / "frames.parquet")
    assert {"surface_f1", "bulk_f1", "mean_llr"} <= set(frames.columns)
    assert len(read_table(out / "frames_avg3.parquet")) == 2


def test_analyze_reads_analysis_settings_at_top_level_or_as_a_pipeline_block(inputs, scheduler, tmp_path):
    from lowdose.errors import ConfigError

    _, series, model = inputs
    common = ["--scheduler", scheduler, "--quiet", "--no-catalog"]
    den_out = tmp_path / "den"
    result = runner.invoke(
        app, ["denoise", str(series), "--out", str(den_out), "--model", str(model), *common]
    )
    assert result.exit_code == 0, result.output
    den = str(den_out / "denoised.zarr")
    counts = {}
    files = {
        "default": None,
        "top": "detection_threshold: 0.0\n",
        "block": "analysis:\n  detection_threshold: 0.0\n",
    }
    for name, text in files.items():
        extra = []
        if text is not None:
            (tmp_path / f"{name}.yaml").write_text(text)
            extra = ["--analysis", str(tmp_path / f"{name}.yaml")]
        out = tmp_path / name
        result = runner.invoke(
            app, ["analyze", str(series), "--denoised", den, "--out", str(out), *extra, *common]
        )
        assert result.exit_code == 0, result.output
        counts[name] = int(read_table(out / "frames.parquet")["n_columns"].sum())
    assert counts["top"] == counts["block"] > counts["default"]  # the lower threshold was applied
    (tmp_path / "bad.yaml").write_text("analysis:\n  detection_treshold: 0.1\n")
    result = runner.invoke(
        app,
        [
            "analyze",
            str(series),
            "--denoised",
            den,
            "--out",
            str(tmp_path / "bad"),
            "--analysis",
            str(tmp_path / "bad.yaml"),
            *common,
        ],
    )
    assert isinstance(result.exception, ConfigError) and "detection_treshold" in str(result.exception)
    assert "bad.yaml" in str(result.exception)
    assert not (tmp_path / "bad").exists()


def test_bad_inputs_are_one_line_errors(inputs, tmp_path):
    _, series, _ = inputs
    from lowdose.errors import LowdoseInputError

    bad = tmp_path / "bad.yaml"
    bad.write_text("series: s.zarr\nout: o\nbogus: 1\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert isinstance(result.exception, LowdoseInputError) and "bogus" in str(result.exception)
    result = runner.invoke(app, ["denoise", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, LowdoseInputError)
    result = runner.invoke(
        app, ["denoise", str(series), "--out", str(tmp_path / "o"), "--cluster", "nope", "--model", "x"]
    )
    assert isinstance(result.exception, LowdoseInputError)
    result = runner.invoke(app, ["denoise", str(series), "--out", str(tmp_path / "o"), "--tta", "3"])
    assert isinstance(result.exception, LowdoseInputError) and "'tta'" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_frames_denoised_from_another_series_of_the_same_shape_are_refused(inputs, scheduler, tmp_path):
    import shutil

    from lowdose.errors import LowdoseInputError
    from lowdose.store.series import update_series_attrs

    _, series, model = inputs
    one, other = tmp_path / "one.zarr", tmp_path / "other.zarr"
    for seed, path in enumerate((one, other)):
        shutil.copytree(series, path)
        update_series_attrs(path, {"synthetic_seed": seed})
    common = ["--scheduler", scheduler, "--quiet", "--no-catalog"]
    result = runner.invoke(
        app, ["denoise", str(one), "--out", str(tmp_path / "d1"), "--model", str(model), *common]
    )
    assert result.exit_code == 0, result.output
    den = str(tmp_path / "d1" / "denoised.zarr")
    result = runner.invoke(
        app, ["analyze", str(other), "--denoised", den, "--out", str(tmp_path / "a2"), *common]
    )
    assert isinstance(result.exception, LowdoseInputError)
    assert f"denoised from {one.resolve()}, not from {other}" in str(result.exception)
    assert "synthetic_seed differs" in str(result.exception) and not (tmp_path / "a2").exists()
    result = runner.invoke(
        app, ["analyze", str(one), "--denoised", den, "--out", str(tmp_path / "a1"), *common]
    )
    assert result.exit_code == 0, result.output


def test_a_catalog_that_cannot_take_the_entries_is_refused_before_the_run(inputs, scheduler, tmp_path):
    _, series, model = inputs
    out = tmp_path / "run"
    out.mkdir()
    (out / "catalog.yaml").write_text("x: [\n")
    result = runner.invoke(
        app,
        [
            "denoise",
            str(series),
            "--out",
            str(out),
            "--model",
            str(model),
            "--scheduler",
            scheduler,
            "--quiet",
        ],
    )
    assert isinstance(result.exception, CatalogError) and "catalog.yaml: not safe plain YAML" in str(
        result.exception
    )
    assert sorted(p.name for p in out.iterdir()) == ["catalog.yaml"]  # nothing denoised, nothing removed
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        yaml.safe_dump({"series": str(series), "out": "run2", "model": str(model), "catalog": "."})
    )
    result = runner.invoke(app, ["run", str(pipeline), "--scheduler", scheduler, "--quiet"])
    assert isinstance(result.exception, CatalogError) and "is a folder; the catalog is a YAML file" in str(
        result.exception
    )
    assert not (tmp_path / "run2").exists()
    (tmp_path / "notes.txt").write_text("x")
    pipeline.write_text(
        yaml.safe_dump(
            {"series": str(series), "out": "run3", "model": str(model), "catalog": "notes.txt/c.yaml"}
        )
    )
    result = runner.invoke(app, ["run", str(pipeline), "--scheduler", scheduler, "--quiet"])
    assert isinstance(result.exception, StoreError) and "notes.txt is not a writable folder" in str(
        result.exception
    )
    assert not (tmp_path / "run3").exists()


def test_a_failed_run_removes_only_the_out_folder_it_created(inputs, scheduler, tmp_path):
    """Bad input found after OUT was made: the new, empty OUT goes; a folder that was there stays."""
    from lowdose.errors import LowdoseInputError
    from lowdose.parallel.outputs import create_denoised_store

    _, series, _ = inputs
    not_a_store = tmp_path / "not-a-store.zarr"
    not_a_store.mkdir()
    (not_a_store / "notes.txt").write_text("not zarr")
    commands = {
        "denoise": ["denoise", str(not_a_store)],
        "analyze": ["analyze", str(not_a_store), "--denoised", str(not_a_store)],
    }
    for name, command in commands.items():
        out = tmp_path / f"new-{name}"
        result = runner.invoke(app, [*command, "--out", str(out), "--quiet"])
        assert isinstance(result.exception, LowdoseInputError), result.output
        assert "not-a-store.zarr" in str(result.exception)
        assert not out.exists(), f"lowdose {name} left {sorted(out.rglob('*'))}"

    kept = tmp_path / "there-before"
    kept.mkdir()
    result = runner.invoke(app, [*commands["denoise"], "--out", str(kept), "--quiet"])
    assert isinstance(result.exception, LowdoseInputError)
    assert kept.is_dir() and list(kept.iterdir()) == []

    # Found later, on the cluster: 4 denoised frames for a 6-frame series. The analysis
    # manifest is in OUT by then, but no chunk is done, so OUT still goes.
    short = tmp_path / "short.zarr"
    create_denoised_store(
        short,
        n_frames=4,
        frame_shape=(64, 64),
        chunk_frames=2,
        dtype="float32",
        time_s=np.arange(4) / 40.0,
        attrs={"model_sha256": "0" * 64, "model_id": "m", "pixel_size_A": 0.1},
    )
    out = tmp_path / "new-mismatch"
    common = ["--scheduler", scheduler, "--quiet", "--no-catalog"]
    result = runner.invoke(
        app, ["analyze", str(series), "--denoised", str(short), "--out", str(out), *common]
    )
    assert isinstance(result.exception, LowdoseInputError), result.output
    assert "does not match the series" in str(result.exception)
    assert not out.exists()
