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
