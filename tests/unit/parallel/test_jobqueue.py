"""SLURM/PBS backends: option merging and the generated job scripts (no batch system needed)."""

from __future__ import annotations

import re
from pathlib import Path

import dask
import pytest
import yaml

from lowdose.errors import ConfigError
from lowdose.parallel.cluster import ClusterOptions, available_backends, resolve_backend_name
from lowdose.parallel.jobqueue import (
    OPTIONS_ENV,
    JobqueueConfig,
    build_pbs_cluster,
    build_slurm_cluster,
    jobqueue_config,
    options_from_file,
    pbs_cluster,
    slurm_cluster,
)

REPO = Path(__file__).resolve().parents[3]
LOCAL = {"scheduler_host": "127.0.0.1"}


def _script(build, config: JobqueueConfig) -> str:
    cluster = build(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def test_backends_are_registered():
    assert {"slurm", "pbs", "kubernetes"} <= set(available_backends())
    assert resolve_backend_name("slurm", None) == "slurm"


def test_slurm_job_script_has_resources_prologue_and_worker_command():
    config = jobqueue_config(
        {
            "cores": 4,
            "memory": "8GB",
            "processes": 2,
            "gpus_per_job": 2,
            "walltime": "00:30:00",
            "queue": "gpu",
            "account": "proj42",
            "job_script_prologue": ["module load cuda", "export OMP_NUM_THREADS=1"],
            "worker_extra_args": ["--lifetime", "55m"],
            **LOCAL,
        }
    )
    script = _script(build_slurm_cluster, config)
    lines = script.splitlines()
    for directive in (
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 00:30:00",
        "#SBATCH --gres=gpu:2",
    ):
        assert directive in lines, directive
    assert any(re.fullmatch(r"#SBATCH --mem=\d+G", line) for line in lines)
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert lines.index("module load cuda") < lines.index(worker)  # prologue before the worker
    assert "export OMP_NUM_THREADS=1" in lines
    assert re.search(r"dask_worker tcp://127\.0\.0\.1:\d+ ", worker)
    assert "--nworkers 2" in worker and "--nthreads 2" in worker
    assert "--lifetime 55m" in worker and "--resources GPU=2" in worker


def test_pbs_job_script_requests_gpus_in_the_select_spec():
    config = jobqueue_config(
        {
            "cores": 8,
            "memory": "16GB",
            "processes": 4,
            "gpus_per_job": 4,
            "queue": "gpuq",
            "walltime": "01:00:00",
        }
        | LOCAL
    )
    lines = _script(build_pbs_cluster, config).splitlines()
    assert "#PBS -l select=1:ncpus=8:ngpus=4:mem=16GB" in lines
    assert "#PBS -q gpuq" in lines and "#PBS -l walltime=01:00:00" in lines
    assert any("--nworkers 4" in line for line in lines)


def test_pbs_without_gpus_keeps_dask_jobqueue_select():
    lines = _script(build_pbs_cluster, jobqueue_config({"cores": 2, "memory": "4GB"} | LOCAL)).splitlines()
    assert any(line.startswith("#PBS -l select=1:ncpus=2:mem=") for line in lines)
    assert not any("ngpus" in line for line in lines)


def test_deploy_jobqueue_yaml_is_read_by_dask_jobqueue():
    config = yaml.safe_load((REPO / "deploy" / "slurm" / "jobqueue.yaml").read_text())
    slurm = config["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{key}": value for key, value in slurm.items()}):
        script = _script(build_slurm_cluster, jobqueue_config(LOCAL))
    assert "#SBATCH -p compute" in script and "#SBATCH --cpus-per-task=8" in script
    assert "source ~/lowdose/.venv/bin/activate" in script
    assert "--nworkers 4" in script


def test_options_file_env_then_extra(tmp_path, monkeypatch):
    path = tmp_path / "opts.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"options": {"cores": 3, "walltime": "01:00:00"}}}))
    monkeypatch.setenv(OPTIONS_ENV, str(path))
    config = jobqueue_config({"walltime": "02:00:00", "minimum-jobs": 1, "maximum-jobs": 3})
    assert (config.cores, config.walltime, config.minimum_jobs, config.maximum_jobs) == (3, "02:00:00", 1, 3)
    assert config.adaptive
    for name in ("cluster-options.yaml",):
        assert JobqueueConfig.model_validate(options_from_file(REPO / "deploy" / "slurm" / name))
    assert JobqueueConfig.model_validate(options_from_file(REPO / "deploy" / "pbs" / "cluster-options.yaml"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cores": 0}, "cores"),
        ({"walltme": "1:00:00"}, "unknown key 'walltme'"),
        ({"jobs": 2, "maximum_jobs": 4}, "not both"),
        ({"minimum_jobs": 5, "maximum_jobs": 2}, "minimum_jobs"),
    ],
)
def test_bad_options_are_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        jobqueue_config(extra)


def test_pbs_gpus_need_cores_and_memory():
    with pytest.raises(ConfigError, match="cores and memory"):
        build_pbs_cluster(jobqueue_config({"gpus_per_job": 1}))


@pytest.mark.parametrize(
    ("backend", "extra"), [(slurm_cluster, {"maximum_jobs": 2}), (pbs_cluster, {"jobs": 0})]
)
def test_backends_scale_without_submitting(backend, extra, monkeypatch):
    # jobs=0 / adaptive with minimum 0 submits nothing, so no batch system is needed.
    cluster = backend(ClusterOptions(extra={"cores": 1, "memory": "1GB", **LOCAL, **extra}))
    try:
        assert len(cluster.workers) == 0
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        if "maximum_jobs" in extra:
            assert cluster._adaptive is not None and cluster._adaptive.maximum == 2
    finally:
        cluster.close()
