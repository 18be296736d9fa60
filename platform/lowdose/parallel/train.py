"""Distributed data-parallel training across Dask workers: one torch DDP rank per worker.

Only orchestration lives here: pick the workers, meet on a TCP store that rank 0
hosts on a port the OS picks for this run (published to the other ranks through a
Dask ``Variable``, so parallel runs never race for a port), and run
:func:`lowdose.training.trainer.train` on each worker with its rank. Each rank
streams its own slice of every global batch; gradients are averaged by DDP (gloo
on CPU, NCCL on GPU), so the run equals a single-process run with the same global
batch. No science here.

Each rank occupies its worker thread for the whole run and blocks in collectives
until the other ranks arrive, so nothing inside a rank may wait for the cluster
to run tasks: a rank computes any dask collection (the SimulationSet's per-image
coords) with the synchronous scheduler. Handing those tiny loads to the cluster
deadlocked when they were queued behind another rank's task.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    import torch.distributed as dist
    from distributed import Client

    from lowdose.training.config import TrainingConfig
    from lowdose.training.trainer import TrainingResult


def _rank_store(rank: int, world_size: int, host: str, variable: str, timeout_s: float) -> dist.Store:
    """Rank 0 hosts a TCP store on a free port and publishes it; the others connect to it."""
    import torch.distributed as dist
    from distributed import Variable

    from lowdose.training.trainer import DistributedTrainingError

    timeout = timedelta(seconds=timeout_s)
    if rank == 0:
        store = dist.TCPStore(host, 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        Variable(variable).set(int(store.port))
        return store
    try:
        port = int(Variable(variable).get(timeout=timeout_s))
    except TimeoutError as err:
        raise DistributedTrainingError(
            f"rank {rank}: rank 0 published no DDP rendezvous port within {timeout_s:g} s "
            "(ddp_rendezvous_timeout_s)"
        ) from err
    try:
        return dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    except (dist.DistError, RuntimeError) as err:
        raise DistributedTrainingError(
            f"rank {rank}: cannot reach rank 0's DDP rendezvous at {host}:{port} "
            f"within {timeout_s:g} s ({err})"
        ) from err


def _run_rank(
    config_json: dict[str, Any],
    out_dir: str,
    rank: int,
    world_size: int,
    host: str,
    variable: str,
    resume: bool,
    config_path: str | None,
    write_artefact: bool,
) -> TrainingResult:
    import dask

    from lowdose.training.config import TrainingConfig
    from lowdose.training.trainer import train

    config = TrainingConfig.model_validate(config_json)
    store = _rank_store(rank, world_size, host, variable, config.ddp_rendezvous_timeout_s)
    # Never hand work back to the cluster from inside a rank (see the module docstring).
    with dask.config.set(scheduler="synchronous"):
        return train(
            config,
            out_dir,
            resume=resume,
            rank=rank,
            world_size=world_size,
            store=store,
            progress=False,
            config_path=config_path,
            write_artefact=write_artefact,
        )


def run_ranks(
    client: Client,
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    n_workers: int | None = None,
    resume: bool = False,
    config_path: str | None = None,
    write_artefact: bool = True,
) -> list[TrainingResult]:
    """Run one DDP rank per Dask worker of ``client``; return every rank's result (rank order).

    Parameters
    ----------
    client
        A connected Dask client; each worker must be a separate process.
    config
        The training config (``batch_size`` is the global batch).
    out_dir
        Output directory, shared by the workers (rank 0 writes).
    n_workers
        Ranks to run (default: every worker).
    resume
        Continue from ``out_dir/checkpoint``.
    write_artefact
        Let rank 0 write the final model artefact.
    """
    workers = sorted(client.scheduler_info()["workers"])
    if n_workers is not None:
        if n_workers > len(workers):
            raise LowdoseInputError(f"--workers {n_workers}: the cluster has only {len(workers)} workers")
        workers = workers[:n_workers]
    if not workers:
        raise LowdoseInputError("the Dask cluster has no workers")
    world_size = len(workers)
    if config.batch_size % world_size:
        raise LowdoseInputError(
            f"batch_size {config.batch_size} is not divisible by the {world_size} DDP ranks (workers)"
        )
    from distributed import Variable, as_completed

    # Rank 0 hosts the rendezvous on the host its Dask worker listens on.
    host = urlsplit(workers[0]).hostname or "127.0.0.1"
    run_id = uuid.uuid4().hex
    variable = f"lowdose-train-rendezvous-{run_id}"
    payload = config.model_dump(mode="json")
    futures = [
        client.submit(
            _run_rank,
            payload,
            str(out_dir),
            rank,
            world_size,
            host,
            variable,
            resume,
            config_path,
            write_artefact,
            workers=[address],
            allow_other_workers=False,
            pure=False,
            key=f"lowdose-train-rank-{rank}-{run_id}",
        )
        for rank, address in enumerate(workers)
    ]
    try:
        # Fail as soon as any rank fails rather than waiting for the others' timeouts.
        for future in as_completed(futures):
            if future.status == "error":
                future.result()  # re-raises the rank's exception
        results: list[TrainingResult] = client.gather(futures)
    finally:
        Variable(variable, client=client).delete()
    return results


def train_with_client(
    client: Client,
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    n_workers: int | None = None,
    resume: bool = False,
    config_path: str | None = None,
) -> TrainingResult:
    """Like :func:`run_ranks` but return rank 0's result (the one that wrote the artefact)."""
    return run_ranks(client, config, out_dir, n_workers=n_workers, resume=resume, config_path=config_path)[0]


def train_on_cluster(
    config: TrainingConfig,
    out_dir: str | Path,
    *,
    scheduler: str,
    n_workers: int | None = None,
    resume: bool = False,
    config_path: str | None = None,
) -> TrainingResult:
    """Connect to the scheduler at ``scheduler`` and run :func:`train_with_client`."""
    from lowdose.parallel.cluster import connect

    with connect(scheduler=scheduler) as client:
        return train_with_client(
            client, config, out_dir, n_workers=n_workers, resume=resume, config_path=config_path
        )
