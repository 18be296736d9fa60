"""The pipeline's progress bar: drawn while chunks run, absent when a resumed run has none left."""

import dask
import pytest
from distributed import Client, LocalCluster

from lowdose.parallel.pipeline import _run_futures


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def test_bar_counts_chunks_under_its_label(client, capsys):
    tasks = [dask.delayed(lambda i: {"chunk": i})(i) for i in range(3)]
    results = _run_futures(client, tasks, "frame chunks", progress=True)
    assert sorted(r["chunk"] for r in results) == [0, 1, 2]
    assert "frame chunks: 100%" in capsys.readouterr().err


def test_no_bar_when_nothing_is_left(client, capsys):
    assert _run_futures(client, [], "frame chunks", progress=True) == []
    assert "frame chunks" not in capsys.readouterr().err
