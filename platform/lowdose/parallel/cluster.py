"""One factory for the Dask clusters lowdose runs on.

``local`` (a LocalCluster sized for the machine) is the default; ``address``
connects to a running scheduler. Other backends (dask-cuda, SLURM/PBS through
dask-jobqueue, Kubernetes) plug in here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    from distributed import Client


def default_local_shape(n_cores: int | None = None) -> tuple[int, int]:
    """Workers × threads for a LocalCluster on this machine.

    One thread per worker process: torch and the numpy kernels each hold the GIL
    for long stretches, so processes parallelise better than threads.
    """
    n = n_cores or os.cpu_count() or 1
    return max(1, n), 1


@contextlib.contextmanager
def connect(
    cluster: str = "local",
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = "auto",
    processes: bool = True,
    quiet: bool = False,
) -> Iterator[Client]:
    """Start (or connect to) a Dask cluster and yield a client; tear down on exit.

    Parameters
    ----------
    cluster
        ``"local"`` (default) or ``"address"``; a ``scheduler`` address implies
        ``"address"``.
    scheduler
        Address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``.
    n_workers, threads_per_worker, memory_limit, processes
        LocalCluster shape; defaults from :func:`default_local_shape`.
    quiet
        Do not print the dashboard link.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        cluster = "address"
    if cluster == "address":
        if not scheduler:
            raise LowdoseInputError("--cluster address needs --scheduler ADDRESS")
        client = Client(scheduler)
        try:
            if not quiet:
                print(f"Connected to Dask scheduler {scheduler}; dashboard: {client.dashboard_link}")
            yield client
        finally:
            client.close()
        return
    if cluster != "local":
        raise LowdoseInputError(f"unknown cluster backend {cluster!r}; expected 'local' or 'address'")
    workers, threads = default_local_shape()
    local = LocalCluster(
        n_workers=n_workers or workers,
        threads_per_worker=threads_per_worker or threads,
        memory_limit=memory_limit,
        processes=processes,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
    )
    client = Client(local)
    try:
        if not quiet:
            print(f"Dask LocalCluster ready; dashboard: {client.dashboard_link}")
        yield client
    finally:
        client.close()
        local.close()
