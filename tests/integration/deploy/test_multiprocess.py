"""`lowdose run` and `lowdose cluster info` against real `dask scheduler` + `dask worker` processes."""

from __future__ import annotations

import pytest

from tests.integration.deploy.conftest import assert_same_outputs, lowdose, pipeline_yaml

pytestmark = pytest.mark.slow


def test_run_on_scheduler_matches_local_cluster(deploy_inputs, local_reference, dask_processes, tmp_path):
    series, model = deploy_inputs
    config = pipeline_yaml(tmp_path / "p.yaml", series, tmp_path / "out", model)
    proc = lowdose("run", str(config), "--scheduler", dask_processes, "--quiet")
    assert f"{8} frames in 4 chunks (4 run, 0 already done)" in proc.stdout
    assert_same_outputs(tmp_path / "out", local_reference)


def test_cluster_info_reports_both_workers(dask_processes):
    out = lowdose("cluster", "info", "--scheduler", dask_processes).stdout
    assert f"scheduler: {dask_processes}" in out
    assert "workers:   2" in out
    assert "threads:   2" in out
    assert "memory:    3.73 GiB" in out
