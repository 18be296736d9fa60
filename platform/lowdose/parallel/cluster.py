"""One factory for the Dask clusters lowdose runs on.

Backends are looked up by name in :data:`BACKENDS` (``name → "module:function"``,
imported on demand, like ``CONFIG_KINDS``):

- ``auto`` (default): ``address`` when a scheduler is given, else
  ``local-cuda`` when CUDA is present, else ``local``;
- ``local``: a :class:`distributed.LocalCluster` sized for the machine;
- ``local-cuda``: a ``dask_cuda.LocalCUDACluster`` (one worker per GPU; needs
  the ``[gpu]`` extra);
- ``address``: connect to a running scheduler.

- ``slurm`` / ``pbs`` (:mod:`lowdose.parallel.jobqueue`) and ``kubernetes``
  (:mod:`lowdose.parallel.kube`).

More backends plug in with a one-line entry in :data:`BACKENDS` or with
:func:`register_backend`: a backend is a function ``(ClusterOptions) -> cluster``
returning anything a :class:`distributed.Client` accepts and that has ``close()``.

Backend options (the ``options:`` mapping of a ``cluster:`` block, ``-o KEY=VALUE``
of ``lowdose cluster up``, the keyword arguments of :func:`connect`) are
validated strictly against the backend's options model in
:data:`BACKEND_OPTIONS` (:func:`validate_backend_options`); a backend without a
model there gets them unchecked.

Imports dask/distributed only inside functions; never imports torch at module
level.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from lowdose.config.base import LowdoseConfig, validate_config
from lowdose.errors import ConfigError, LowdoseInputError

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class ClusterOptions:
    """What a cluster backend is asked for (``None`` means the backend's default)."""

    scheduler: str | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = "auto"
    processes: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


Backend = Callable[[ClusterOptions], Any]

BACKENDS: dict[str, str | Backend] = {
    "local": "lowdose.parallel.cluster:local_cluster",
    "local-cuda": "lowdose.parallel.cluster:local_cuda_cluster",
    "slurm": "lowdose.parallel.jobqueue:slurm_cluster",
    "pbs": "lowdose.parallel.jobqueue:pbs_cluster",
    "kubernetes": "lowdose.parallel.kube:kubernetes_cluster",
}
"""Cluster backend name → ``"module:function"`` (or the function itself)."""


class NoOptions(LowdoseConfig):
    """Options of a backend that takes none (``address``)."""


class LocalOptions(LowdoseConfig):
    """Options of the ``local`` backend (its shape is ``n_workers``/``threads_per_worker``)."""

    dashboard_address: str = Field(
        default="127.0.0.1:0", description="Where the dashboard listens (default: a free port)."
    )


GPU_ID_PATTERN = r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$"


class LocalCudaOptions(LowdoseConfig):
    """Options of the ``local-cuda`` backend (one worker per selected GPU)."""

    gpus: list[str] | None = Field(
        default=None,
        description="GPUs to use as CUDA_VISIBLE_DEVICES ids, e.g. '0,2' or [0, 2] (default: all visible).",
    )
    dashboard_address: str = Field(
        default="127.0.0.1:0", description="Where the dashboard listens (default: a free port)."
    )
    rmm_pool_size: str | None = Field(default=None, description="RMM memory pool per GPU, e.g. '20GB'.")

    @field_validator("gpus", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return [str(value)]
        if isinstance(value, str):
            return [part.strip() for part in value.split(",")]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("gpus")
    @classmethod
    def _check(cls, value: list[str] | None) -> list[str] | None:
        import re

        if value is None:
            return None
        if not value:
            raise ValueError("expected at least one GPU id")
        bad = [v for v in value if not re.match(GPU_ID_PATTERN, v)]
        if bad:
            raise ValueError(f"GPU ids {bad} are not device numbers or GPU-/MIG- UUIDs")
        if len(set(value)) != len(value):
            raise ValueError(f"GPU ids {value} repeat a device")
        return value


BACKEND_OPTIONS: dict[str, str | type[LowdoseConfig]] = {
    "local": LocalOptions,
    "local-cuda": LocalCudaOptions,
    "address": NoOptions,
    "slurm": "lowdose.parallel.jobqueue:JobqueueConfig",
    "pbs": "lowdose.parallel.jobqueue:JobqueueConfig",
    "kubernetes": "lowdose.parallel.kube:KubernetesOptions",
}
"""Backend name → its options model (or ``"module:Class"``); backends not listed take any options."""


def register_backend(
    name: str, backend: str | Backend, options: str | type[LowdoseConfig] | None = None
) -> None:
    """Make ``backend`` available as ``--cluster name`` (with ``options`` validating its options)."""
    BACKENDS[name] = backend
    if options is not None:
        BACKEND_OPTIONS[name] = options
    else:
        BACKEND_OPTIONS.pop(name, None)


def options_model(name: str) -> type[LowdoseConfig] | None:
    """The options model of backend ``name`` (``None``: the backend checks its own options)."""
    target = BACKEND_OPTIONS.get(name)
    if target is None or isinstance(target, type):
        return target
    module_name, _, class_name = target.partition(":")
    model: type[LowdoseConfig] = getattr(importlib.import_module(module_name), class_name)
    return model


def validate_backend_options(
    name: str, options: dict[str, Any] | None, source: str = "cluster.options"
) -> dict[str, Any]:
    """Check ``options`` against backend ``name``'s model; return them (keys with ``_``, not ``-``).

    Raises
    ------
    ConfigError
        Naming ``source``, the backend and the offending field, e.g.
        ``cluster.options (backend slurm): unknown key 'coress'``.
    """
    given = {str(k).replace("-", "_"): v for k, v in (options or {}).items()}
    if name == "auto":
        if given:
            raise ConfigError(
                f"{source}: options {sorted(given)} need a named backend (cluster name / --cluster), "
                "not 'auto'"
            )
        return given
    model = options_model(name)
    if model is None:
        return given
    from pydantic import ValidationError

    fields = sorted(k for k in model.model_fields if k != "version")
    if "version" in given:
        given.pop("version")
        raise ConfigError(f"{source}.version: unknown option for backend {name!r} (expected {fields})")
    try:
        model.model_validate(given)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            where = ".".join([source, *(str(p) for p in item["loc"])]) if item["loc"] else source
            if item["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown option for backend {name!r} (expected {fields})")
            elif item["type"] == "value_error":
                problems.append(f"{where}: {(item.get('ctx') or {}).get('error', item['msg'])}")
            else:
                problems.append(f"{where}: {item['msg']}")
        raise ConfigError("; ".join(problems)) from None
    return given


def available_backends() -> list[str]:
    """Names accepted by ``--cluster``."""
    return sorted({"auto", "address", *BACKENDS})


def default_local_shape(n_cores: int | None = None, memory_bytes: int | None = None) -> tuple[int, int]:
    """Workers × threads for a LocalCluster on this machine.

    One thread per worker process where memory allows (torch and the numpy
    kernels hold the GIL for long stretches, so processes parallelise better
    than threads), but at most one worker per 4 GB of RAM, because every worker
    holds its own copy of the model and a few frames of activations.
    """
    n = n_cores or os.cpu_count() or 1
    if memory_bytes is None:
        try:
            import psutil

            memory_bytes = int(psutil.virtual_memory().total)
        except ImportError:  # pragma: no cover - psutil is a dependency
            memory_bytes = 4 * n * 2**30
    workers = max(1, min(n, memory_bytes // (4 * 2**30)))
    return workers, max(1, n // workers)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend_name(cluster: str, scheduler: str | None) -> str:
    """Turn ``auto`` into a concrete backend name; validate the others."""
    if cluster == "auto":
        if scheduler:
            return "address"
        return "local-cuda" if cuda_available() else "local"
    if cluster == "address" or cluster in BACKENDS:
        return cluster
    raise LowdoseInputError(f"--cluster: unknown backend {cluster!r}; expected one of {available_backends()}")


MALLOC_MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc mmap threshold for worker processes (frame chunks and activations stay on the heap)."""


def worker_environment() -> dict[str, str]:
    """Environment of spawned worker processes.

    Distributed sets ``MALLOC_TRIM_THRESHOLD_`` for its workers, which switches off
    glibc's adaptive mmap threshold: every array above 128 kB is then mmapped and
    unmapped again, and the page faults cost as much system time as the
    kernels' own work (measured: 0.08 s/frame of 0.2 on 512² frames). A fixed
    32 MB mmap threshold keeps frame-sized buffers on the heap.
    """
    return {"MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD_BYTES)}


WORKER_TRIM_THRESHOLD_BYTES = 64 * 2**20
"""glibc trim threshold of pipeline and simulation-grid workers (:func:`tune_worker_allocator`)."""

_ALLOCATOR_TUNED = False


def tune_worker_allocator() -> bool:
    """In a Dask worker process on glibc, stop the heap from being returned to the OS after every free.

    Distributed starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``: glibc then
    hands any free block above 64 kB at the top of the heap back to the OS, so the
    analysis's per-frame temporaries (padded FFT grids and LoG stacks, megabytes each)
    are unmapped after every frame and page-faulted in again on the next one. Measured
    (200 frames of 512², 2 workers, docs/performance.md): the workers' system time fell
    from 2.6 to 0.4 s (≈ 11 ms per frame) and the analysis kernel's CPU per frame from
    56 to 44 ms, what it costs in a plain process.
    This sets, once per process and only inside a Dask worker (threaded local workers:
    the client's own process), the trim threshold to
    :data:`WORKER_TRIM_THRESHOLD_BYTES` and the mmap threshold to the local cluster's
    (:data:`MALLOC_MMAP_THRESHOLD_BYTES`; ``mallopt`` of either
    switches glibc's dynamic thresholds off, so both are set) — with ``mallopt``, so it
    applies whatever backend spawned the worker. Returns whether it was applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False  # not in a worker: leave the caller's process alone
    _ALLOCATOR_TUNED = set_malloc_thresholds(MALLOC_MMAP_THRESHOLD_BYTES, WORKER_TRIM_THRESHOLD_BYTES)
    return _ALLOCATOR_TUNED


def release_free_memory() -> bool:
    """In a Dask worker on glibc, hand the heap's free pages back to the OS (``malloc_trim(0)``).

    The pipeline calls it after every chunk task: the heap then keeps no more than the
    next chunk needs, instead of a fragmented high-water mark that creeps up over a long
    series (the threshold of :func:`tune_worker_allocator` applies only to the heap's top).
    Once per chunk, so the page faults it causes are paid once per chunk, not per frame.
    """
    if not _ALLOCATOR_TUNED:
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def set_malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """Set glibc's mmap and trim thresholds of this process (``mallopt``); False where there is no glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = bool(mallopt(m_mmap_threshold, int(mmap_bytes)))
    return bool(mallopt(m_trim_threshold, int(trim_bytes))) and ok


WORKER_LOG_LENGTH = 100
"""Entries Dask keeps in its low-level logs on lowdose's local clusters (distributed's default: 1,000).

The largest is each worker's profile history, one statistical profile per second of work:
with 1,000 entries a pipeline worker's memory crept up for the first ≈ 17 minutes of a
run (measured, 256² frames: +56 MB over 200 s, ≈ 175 MB at the cap), so a longer series
had a higher peak; with 100 the history covers the last 100 s (the dashboard's profile
page still shows them). A value set in the user's Dask config is kept.
"""
_DASK_LOG_LENGTH_DEFAULT = 1000


def bounded_logs() -> dict[str, Any]:
    """Dask config for a cluster lowdose starts: :data:`WORKER_LOG_LENGTH` unless configured otherwise."""
    import dask

    key = "distributed.admin.low-level-log-length"
    if dask.config.get(key, _DASK_LOG_LENGTH_DEFAULT) != _DASK_LOG_LENGTH_DEFAULT:
        return {}
    return {key: WORKER_LOG_LENGTH}


def local_cluster(options: ClusterOptions) -> Any:
    """A :class:`distributed.LocalCluster` on 127.0.0.1 with a free dashboard port."""
    import dask
    from distributed import LocalCluster

    workers, threads = default_local_shape()
    settings = validate_config(LocalOptions, options.extra, "--cluster local options")
    kwargs: dict[str, Any] = {"dashboard_address": settings.dashboard_address}
    if options.processes:
        kwargs["host"] = "127.0.0.1"  # in-process clusters use the inproc:// transport instead
    # glibc reads MALLOC_* once at process start: they must be in the environment the
    # nanny spawns workers with (pre-spawn-environ), not set in the worker afterwards.
    spawn_env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in worker_environment().items()}
    with dask.config.set({**spawn_env, **bounded_logs()}):  # the nanny hands its config to the worker
        return LocalCluster(
            n_workers=options.n_workers or workers,
            threads_per_worker=options.threads_per_worker or threads,
            memory_limit=options.memory_limit,
            processes=options.processes,
            **kwargs,
        )


def local_cuda_kwargs(options: ClusterOptions) -> dict[str, Any]:
    """``LocalCUDACluster`` keyword arguments: ``gpus`` becomes ``CUDA_VISIBLE_DEVICES``."""
    settings = validate_config(LocalCudaOptions, options.extra, "--cluster local-cuda options")
    kwargs: dict[str, Any] = {"dashboard_address": settings.dashboard_address}
    if settings.gpus is not None:
        kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(settings.gpus)
    if settings.rmm_pool_size is not None:
        kwargs["rmm_pool_size"] = settings.rmm_pool_size
    if options.n_workers:
        kwargs["n_workers"] = options.n_workers
    if options.threads_per_worker:
        kwargs["threads_per_worker"] = options.threads_per_worker
    if options.memory_limit:
        kwargs["memory_limit"] = options.memory_limit
    return kwargs


def local_cuda_cluster(options: ClusterOptions) -> Any:
    """A ``dask_cuda.LocalCUDACluster``: one worker per selected (default: visible) GPU."""
    kwargs = local_cuda_kwargs(options)
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as err:
        raise ImportError(
            "--cluster local-cuda needs dask-cuda; install the GPU extra: pip install 'lowdose[gpu]'"
        ) from err
    import dask

    with dask.config.set(bounded_logs()):
        return LocalCUDACluster(**kwargs)


def _load_backend(name: str) -> Backend:
    target = BACKENDS[name]
    if callable(target):
        return target
    module_name, _, func_name = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module_name), func_name)
    return backend


class InputErrorLogFilter:
    """Drops the worker's "Compute Failed" log record of a task that raised a lowdose input error.

    Such an error (a corrupt chunk, a bad file, a wrong option) reaches the client, which
    reports it in one line; the worker's record before it repeats the message with a
    traceback into dask. The record carries only text (the exception's repr and the
    traceback), so an error counts as lowdose's when its class name is one of
    :class:`lowdose.errors.LowdoseInputError` and its subclasses *and* it was raised in
    lowdose's own code (the traceback's last frame is in the package): another library's
    ``FormatError`` or ``ConfigError`` is still logged, as are failures of any other kind.
    """

    def filter(self, record: Any) -> bool:
        """Whether to keep ``record`` (a :class:`logging.LogRecord`)."""
        from lowdose import errors

        args = record.args
        if not str(record.msg).startswith("Compute Failed") or not isinstance(args, tuple) or len(args) < 5:
            return True
        text = str(args[3]).lstrip("\"'")
        names = {cls.__name__ for cls in _subclasses(errors.LowdoseInputError)}
        if not any(text.startswith(name + "(") for name in names):
            return True
        return not _raised_in_lowdose(str(args[4]))


def _raised_in_lowdose(traceback_text: str) -> bool:
    """Whether the last frame of a formatted traceback is a file of the lowdose package."""
    import re
    from pathlib import Path

    import lowdose

    files = re.findall(r'File "([^"]+)"', traceback_text)
    if not files:
        return False
    package = Path(lowdose.__file__).resolve().parent
    try:
        return Path(files[-1]).resolve().is_relative_to(package)
    except OSError:
        return False


def _subclasses(cls: type) -> list[type]:
    found: list[type] = [cls]
    sub: type
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def quiet_input_errors() -> None:
    """Install :class:`InputErrorLogFilter` on this process's ``distributed.worker`` logger (once)."""
    import logging

    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, InputErrorLogFilter) for f in logger.filters):
        logger.addFilter(InputErrorLogFilter())


def _quiet_input_errors_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietInputErrors(WorkerPlugin):
        name = "lowdose-quiet-input-errors"

        def setup(self, worker: Any) -> None:
            quiet_input_errors()

        def teardown(self, worker: Any) -> None:
            # in-process workers share the caller's logger: leave it as it was found
            import logging

            logger = logging.getLogger("distributed.worker")
            for found in [f for f in logger.filters if isinstance(f, InputErrorLogFilter)]:
                logger.removeFilter(found)

    return QuietInputErrors()


@contextlib.contextmanager
def connect(
    cluster: str = "auto",
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | None = "auto",
    processes: bool = True,
    quiet: bool = False,
    options: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Iterator[Client]:
    """Start (or connect to) a Dask cluster and yield a client; tear down on exit.

    Parameters
    ----------
    cluster
        A backend name (see :func:`available_backends`); ``"auto"`` picks
        ``address`` / ``local-cuda`` / ``local``.
    scheduler
        Address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``.
    n_workers, threads_per_worker, memory_limit, processes
        Cluster shape; defaults from :func:`default_local_shape` for ``local``.
    quiet
        Do not print the dashboard link.
    options, **extra
        Backend options (see :data:`BACKEND_OPTIONS`), validated before anything
        starts; ``options`` as a mapping (it may hold names such as ``processes``,
        the jobqueue processes per job, that clash with the arguments above).

    Examples
    --------
    >>> with connect("local", n_workers=1, processes=False, quiet=True) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    from distributed import Client

    name = resolve_backend_name(cluster, scheduler)
    extra = validate_backend_options(name, {**extra, **(options or {})}, f"--cluster {name} options")
    if name == "address":
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
    asked = ClusterOptions(
        scheduler=scheduler,
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit,
        processes=processes,
        extra=extra,
    )
    backend = _load_backend(name)
    started = backend(asked)
    try:
        client = Client(started)
        try:
            # workers lowdose started: an input error is reported once, by the client
            client.register_plugin(_quiet_input_errors_plugin())
            if not quiet:
                print(f"Dask {name} cluster ready; dashboard: {client.dashboard_link}")
            yield client
        finally:
            client.close()
    finally:
        started.close()
