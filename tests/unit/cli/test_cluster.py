"""`lowdose cluster up|info|backends` in-process (a real in-process LocalCluster)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from lowdose.cli import app
from lowdose.cli._pipeline_options import parse_option
from lowdose.cli.cluster import read_cluster_file
from lowdose.errors import ConfigError

runner = CliRunner()


def test_backends_lists_the_deploy_backends():
    result = runner.invoke(app, ["cluster", "backends"])
    assert result.exit_code == 0
    assert {"auto", "address", "local", "local-cuda", "slurm", "pbs", "kubernetes"} <= set(
        result.stdout.split()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cores=8", ("cores", 8)),
        ("job-script-prologue=[a, b]", ("job_script_prologue", ["a", "b"])),
        ("walltime=01:00:00", ("walltime", "01:00:00")),
        ("queue=gpu", ("queue", "gpu")),
    ],
)
def test_parse_option(text, expected):
    assert parse_option(text) == expected


def test_parse_option_rejects_missing_equals():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_option("cores")


def test_read_cluster_file_takes_a_pipeline_cluster_block(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump({"series": "s.zarr", "cluster": {"name": "slurm", "options": {"cores": 4}}})
    )
    block = read_cluster_file(path)
    assert block["name"] == "slurm" and block["options"] == {"cores": 4}
    path.write_text(yaml.safe_dump({"cluster": {"nme": "slurm"}}))
    with pytest.raises(ConfigError, match="unknown key 'nme'"):
        read_cluster_file(path)


def test_up_prints_addresses_then_stops(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"cluster": {"name": "local", "n_workers": 1, "processes": False}}))
    result = runner.invoke(
        app, ["cluster", "up", "--config", str(config), "--threads-per-worker", "1", "--for", "0.5"]
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert lines["scheduler"].startswith("inproc://")
    assert lines["dashboard"].startswith("http://") and lines["dashboard"].endswith("/status")


def test_info_on_an_unreachable_scheduler_is_a_user_error():
    result = runner.invoke(app, ["cluster", "info", "--scheduler", "tcp://127.0.0.1:1", "--timeout-s", "0.5"])
    assert result.exit_code != 0
    assert "cannot connect" in str(result.exception)


def test_up_names_a_bad_backend_option():
    result = runner.invoke(app, ["cluster", "up", "--cluster", "local", "--gpus", "0", "--for", "0"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "options.gpus: unknown option for backend 'local'" in str(result.exception)


def test_run_names_a_bad_backend_option(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"series": "s.zarr", "out": "out", "cluster": {"name": "slurm"}}))
    result = runner.invoke(app, ["run", str(path), "-o", "walltme=1:00:00"])
    assert isinstance(result.exception, ConfigError)
    assert "options.walltme: unknown option for backend 'slurm'" in str(result.exception)
