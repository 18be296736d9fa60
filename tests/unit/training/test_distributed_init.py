"""The DDP rendezvous is bounded: a rank that never arrives is a clear error, not a hang."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from lowdose.training.trainer import DistributedTrainingError, init_distributed


def test_missing_rank_raises_within_the_rendezvous_timeout() -> None:
    store = dist.TCPStore(
        "127.0.0.1", 0, 2, is_master=True, timeout=timedelta(seconds=10), wait_for_workers=False
    )
    started = time.monotonic()
    with pytest.raises(DistributedTrainingError, match=r"rank 0: not all 2 DDP ranks joined within 0.5 s"):
        init_distributed("gloo", 0, 2, store=store, rendezvous_timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert not dist.is_initialized()


def test_unreachable_rendezvous_raises_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(DistributedTrainingError, match=rf"rank 1: cannot reach .*127.0.0.1:{port}"):
        init_distributed("gloo", 1, 2, init_method=f"tcp://127.0.0.1:{port}", rendezvous_timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert not dist.is_initialized()


def test_init_method_must_be_tcp() -> None:
    with pytest.raises(ValueError, match="expected tcp://HOST:PORT"):
        init_distributed("gloo", 0, 2, init_method="env://", rendezvous_timeout_s=0.5)
