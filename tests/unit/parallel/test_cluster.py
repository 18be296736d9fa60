import pytest

from lowdose.errors import LowdoseInputError
from lowdose.parallel import cluster
from lowdose.parallel.cluster import (
    ClusterOptions,
    available_backends,
    connect,
    default_local_shape,
    register_backend,
    resolve_backend_name,
)


def test_default_shape_fits_cores_and_memory():
    assert default_local_shape(8, 64 * 2**30) == (8, 1)
    assert default_local_shape(8, 8 * 2**30) == (2, 4)
    assert default_local_shape(2, 1 * 2**30) == (1, 2)


def test_auto_resolution_and_errors():
    assert resolve_backend_name("auto", "tcp://h:8786") == "address"
    assert resolve_backend_name("auto", None) in ("local", "local-cuda")
    if not cluster.cuda_available():
        assert resolve_backend_name("auto", None) == "local"
    with pytest.raises(LowdoseInputError, match="unknown backend"):
        resolve_backend_name("nope", None)
    with pytest.raises(LowdoseInputError, match="--scheduler"):
        with connect("address"):
            pass


@pytest.mark.skipif(cluster.cuda_available(), reason="checks the no-dask-cuda message")
def test_local_cuda_without_dask_cuda_names_the_extra():
    pytest.importorskip("torch")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"lowdose\[gpu\]"):
            cluster.local_cuda_cluster(ClusterOptions())


def test_registered_backend_is_used_and_closed(capsys, monkeypatch):
    from distributed import LocalCluster

    started = []

    def backend(options: ClusterOptions):
        started.append(options)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")

    monkeypatch.setitem(cluster.BACKENDS, "toy", backend)
    register_backend("toy", backend)
    assert "toy" in available_backends()
    with connect("toy", n_workers=3, queue="short") as client:
        assert client.submit(sum, [1, 2]).result() == 3
    assert started[0].n_workers == 3 and started[0].extra == {"queue": "short"}
    assert "dashboard" in capsys.readouterr().out
    assert client.status == "closed"


def test_local_process_workers_get_the_malloc_environment():
    import os

    with connect("local", n_workers=1, threads_per_worker=1, processes=True, quiet=True) as client:
        found = client.run(lambda: os.environ.get("MALLOC_MMAP_THRESHOLD_"))
    assert list(found.values()) == [str(cluster.MALLOC_MMAP_THRESHOLD_BYTES)]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"name": "slurm", "options": {"coress": 2}}, r"options\.coress: unknown option for backend 'slurm'"),
        ({"name": "pbs", "options": {"cores": 0}}, r"options\.cores: Input should be greater"),
        ({"name": "slurm", "options": {"jobs": 2, "maximum_jobs": 3}}, "either jobs"),
        ({"name": "local-cuda", "options": {"gpus": "0,x"}}, r"options\.gpus: GPU ids \['x'\]"),
        ({"name": "local-cuda", "options": {"gpus": [1, 1]}}, "repeat a device"),
        ({"name": "local", "options": {"gpus": "0"}}, r"options\.gpus: unknown option for backend 'local'"),
        ({"name": "kubernetes", "options": {"spec": "k.yaml", "replicas": 2}}, r"options\.replicas"),
        (
            {"scheduler": "tcp://h:8786", "options": {"cores": 1}},
            r"options\.cores: unknown option .* 'address'",
        ),
        ({"options": {"cores": 1}}, "need a named backend"),
    ],
)
def test_cluster_options_are_checked_per_backend(block, message):
    from lowdose.config.base import validate_config
    from lowdose.errors import ConfigError
    from lowdose.parallel.pipeline import ClusterConfig

    with pytest.raises(ConfigError, match=message):
        validate_config(ClusterConfig, block, "p.yaml")


def test_valid_cluster_options_reach_the_backend_arguments():
    from lowdose.config.base import validate_config
    from lowdose.parallel.jobqueue import jobqueue_config, slurm_kwargs
    from lowdose.parallel.pipeline import ClusterConfig

    block = {
        "name": "slurm",
        "options": {"cores": 4, "gpus-per-job": 1, "minimum_jobs": 0, "maximum_jobs": 3},
    }
    config = validate_config(ClusterConfig, block, "p.yaml")
    jq = jobqueue_config(config.options)
    assert (jq.cores, jq.adaptive, jq.maximum_jobs) == (4, True, 3)
    assert "--gres=gpu:1" in slurm_kwargs(jq)["job_extra_directives"]
    cuda = validate_config(ClusterConfig, {"name": "local-cuda", "options": {"gpus": [0, 2]}}, "p.yaml")
    kwargs = cluster.local_cuda_kwargs(ClusterOptions(n_workers=None, extra=cuda.options))
    assert kwargs["CUDA_VISIBLE_DEVICES"] == "0,2" and "n_workers" not in kwargs  # one worker per GPU


def test_connect_checks_options_before_starting_anything():
    from lowdose.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--cluster local options\.cores: unknown option"):
        with connect("local", cores=2):
            pass


def test_command_line_gpus_select_local_cuda_and_merge_options():
    from lowdose.cli._pipeline_options import cluster_overrides, merge_cluster

    given = cluster_overrides(None, None, None, None, "0,1", ["rmm-pool-size=2GB"])
    assert merge_cluster({"n_workers": 2}, given) == {
        "n_workers": 2,
        "name": "local-cuda",
        "options": {"rmm_pool_size": "2GB", "gpus": "0,1"},
    }
    block = {"name": "slurm", "options": {"cores": 4, "queue": "a"}}
    assert merge_cluster(block, cluster_overrides(None, None, None, None, None, ["queue=b"]))["options"] == {
        "cores": 4,
        "queue": "b",
    }


def test_options_may_use_names_of_connect_arguments():
    """`processes` is a jobqueue option (worker processes per job) and a connect() argument."""
    from lowdose.parallel.jobqueue import JobqueueConfig

    seen = []

    def backend(options: ClusterOptions):
        seen.append(options)
        raise RuntimeError("stop before starting anything")

    register_backend("toy-jq", backend, options=JobqueueConfig)
    try:
        with pytest.raises(RuntimeError, match="stop before"):
            with connect("toy-jq", processes=True, options={"processes": 4, "cores": 4}):
                pass
    finally:
        cluster.BACKENDS.pop("toy-jq")
        cluster.BACKEND_OPTIONS.pop("toy-jq")
    assert seen[0].processes is True and seen[0].extra == {"processes": 4, "cores": 4}


def _raise(error: Exception) -> None:
    raise error


def _open_missing_series(path: str) -> None:
    from lowdose.store.series import open_series

    open_series(path)  # raises lowdose's StoreError from lowdose's own code


def test_workers_do_not_log_input_errors_the_client_reports_but_log_other_failures(tmp_path):
    import logging
    import mailbox

    from lowdose.errors import StoreError

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("distributed.worker")
    logger.addHandler(handler)
    try:
        with connect("local", n_workers=1, threads_per_worker=1, processes=False, quiet=True) as client:
            with pytest.raises(StoreError, match="no zarr store here"):
                client.submit(_open_missing_series, str(tmp_path / "missing.zarr"), pure=False).result()
            with pytest.raises(ZeroDivisionError):
                client.submit(_raise, ZeroDivisionError("a bug"), pure=False).result()
            # another library's error of the same name as a lowdose one, raised outside lowdose
            with pytest.raises(mailbox.FormatError):
                client.submit(_raise, mailbox.FormatError("not lowdose's"), pure=False).result()
    finally:
        logger.removeHandler(handler)
    failed = [r.getMessage() for r in records if str(r.msg).startswith("Compute Failed")]
    assert len(failed) == 2
    # the in-process workers are gone: the caller's logger no longer filters anything
    assert not [f for f in logger.filters if isinstance(f, cluster.InputErrorLogFilter)]
    assert "ZeroDivisionError" in failed[0]
    assert "FormatError(" in failed[1] and "not lowdose" in failed[1]


def _log_lengths(dask_worker):
    return dask_worker.profile_history.maxlen, dask_worker.state.log.maxlen


def test_local_workers_keep_short_dask_logs_unless_configured():
    # a worker's profile history (one entry per second of work) grew its memory for the first
    # ~17 minutes of a run with distributed's 1,000 entries: longer series, higher peaks
    import dask

    with connect("local", n_workers=1, threads_per_worker=1, processes=True, quiet=True) as client:
        assert set(client.run(_log_lengths).values()) == {(cluster.WORKER_LOG_LENGTH,) * 2}
    with dask.config.set({"distributed.admin.low-level-log-length": 500}):
        with connect("local", n_workers=1, threads_per_worker=1, processes=False, quiet=True) as client:
            assert set(client.run(_log_lengths).values()) == {(500, 500)}
