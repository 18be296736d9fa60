"""Distributed data-parallel training across Dask workers: one torch DDP rank per worker.

Only orchestration lives here: pick the workers, choose a rendezvous address on
rank 0's host, and run :func:`lowdose.training.trainer.train` on each worker with
its rank. Each rank streams its own slice of every global batch; gradients are
averaged by DDP (gloo on CPU, NCCL on GPU), so the run equals a single-process
run with the same global batch. No science here.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowdose.errors import LowdoseInputError

if TYPE_CHECKING:
    from distributed import Client

    from lowdose.training.config import TrainingConfig
    from lowdose.training.trainer import TrainingResult


def _free_port() -> tuple[str, int]:
    # Runs on rank 0's worker: a free TCP port on that host for the rendezvous.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = int(sock.getsockname()[1])
    return socket.gethostbyname(socket.gethostname()), port


def _run_rank(
    config_json: dict[str, Any],
    out_dir: str,
    rank: int,
    world_size: int,
    init_method: str,
    resume: bool,
    config_path: str | None,
    write_artefact: bool,
) -> TrainingResult:
    from lowdose.training.config import TrainingConfig
    from lowdose.training.trainer import train

    config = TrainingConfig.model_validate(config_json)
    return train(
        config,
        out_dir,
        resume=resume,
        rank=rank,
        world_size=world_size,
        init_method=init_method,
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
    host, port = client.submit(_free_port, workers=[workers[0]], pure=False).result()
    init_method = f"tcp://{host}:{port}"
    payload = config.model_dump(mode="json")
    futures = [
        client.submit(
            _run_rank,
            payload,
            str(out_dir),
            rank,
            world_size,
            init_method,
            resume,
            config_path,
            write_artefact,
            workers=[address],
            allow_other_workers=False,
            pure=False,
            key=f"lowdose-train-rank-{rank}-{port}",
        )
        for rank, address in enumerate(workers)
    ]
    results: list[TrainingResult] = client.gather(futures)
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
