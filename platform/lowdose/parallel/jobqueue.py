"""Batch-system cluster backends: ``slurm`` and ``pbs`` through dask-jobqueue.

The Dask scheduler runs in the submitting process; every batch job started by
the queue runs ``processes`` Dask worker processes that connect back to it.
Options come from three places, later ones winning:

1. dask-jobqueue's own Dask config (``jobqueue.slurm`` / ``jobqueue.pbs``, e.g.
   ``deploy/slurm/jobqueue.yaml`` in ``DASK_CONFIG`` or ``~/.config/dask``);
2. a YAML file named by the ``LOWDOSE_CLUSTER_OPTIONS`` environment variable
   (the fields of :class:`JobqueueConfig`, or a ``cluster: {options: ...}`` block);
3. the keyword options given to :func:`lowdose.parallel.cluster.connect`
   (``ClusterOptions.extra``).

Scaling: ``jobs`` fixed jobs, or adaptive between ``minimum_jobs`` and
``maximum_jobs``; default one job per ``processes`` of ``--n-workers`` (or one
job). No science here; imports dask-jobqueue only inside the backend functions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from lowdose.config.base import LowdoseConfig, validate_config
from lowdose.errors import ConfigError

if TYPE_CHECKING:
    from lowdose.parallel.cluster import ClusterOptions

OPTIONS_ENV = "LOWDOSE_CLUSTER_OPTIONS"
"""Environment variable naming a YAML file of :class:`JobqueueConfig` fields."""


class JobqueueConfig(LowdoseConfig):
    """Resources and scaling of a ``slurm`` or ``pbs`` cluster (``None``: dask-jobqueue config)."""

    cores: int | None = Field(default=None, ge=1, description="CPU cores per job.")
    memory: str | None = Field(default=None, description="Memory per job, e.g. '16GB'.")
    processes: int | None = Field(default=None, ge=1, description="Dask worker processes per job.")
    gpus_per_job: int = Field(default=0, ge=0, description="GPUs per job (SLURM --gres=gpu:N, PBS ngpus=N).")
    walltime: str | None = Field(default=None, description="Job wall time, e.g. '01:00:00'.")
    queue: str | None = Field(default=None, description="SLURM partition or PBS queue.")
    account: str | None = Field(default=None, description="Account / project charged for the jobs.")
    job_script_prologue: list[str] = Field(
        default_factory=list, description="Shell lines run before the worker starts (module load, env)."
    )
    job_extra_directives: list[str] = Field(
        default_factory=list, description="Extra '#SBATCH' / '#PBS' directives (without the prefix)."
    )
    worker_extra_args: list[str] = Field(default_factory=list, description="Extra `dask worker` arguments.")
    interface: str | None = Field(default=None, description="Network interface of scheduler and workers.")
    scheduler_host: str | None = Field(
        default=None, description="Address the scheduler listens on (reachable from the compute nodes)."
    )
    local_directory: str | None = Field(default=None, description="Worker scratch directory on the nodes.")
    log_directory: str | None = Field(default=None, description="Where the job stdout/stderr go.")
    python: str | None = Field(default=None, description="Python on the nodes (default: this one).")
    jobs: int | None = Field(default=None, ge=0, description="Fixed number of jobs.")
    minimum_jobs: int | None = Field(default=None, ge=0, description="Adaptive scaling: fewest jobs.")
    maximum_jobs: int | None = Field(default=None, ge=1, description="Adaptive scaling: most jobs.")

    @model_validator(mode="after")
    def _check(self) -> JobqueueConfig:
        adaptive = self.minimum_jobs is not None or self.maximum_jobs is not None
        if adaptive and self.jobs is not None:
            raise ValueError("give either jobs (fixed) or minimum_jobs/maximum_jobs (adaptive), not both")
        if self.minimum_jobs is not None and self.maximum_jobs is not None:
            if self.minimum_jobs > self.maximum_jobs:
                raise ValueError(f"minimum_jobs ({self.minimum_jobs}) > maximum_jobs ({self.maximum_jobs})")
        return self

    @property
    def adaptive(self) -> bool:
        """Whether the cluster scales adaptively."""
        return self.minimum_jobs is not None or self.maximum_jobs is not None


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def options_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read :class:`JobqueueConfig` fields from a YAML file.

    The file holds the fields at top level, or under ``cluster: {options: ...}``
    (the shape of a pipeline config's ``cluster:`` block).
    """
    import yaml

    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except OSError as err:
        raise ConfigError(f"{source}: cannot read cluster options ({err.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of cluster options")
    if isinstance(data.get("cluster"), dict):
        data = data["cluster"].get("options") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: cluster.options: expected a mapping")
    return _normalise(data)


def jobqueue_config(extra: dict[str, Any] | None = None, source: str = "cluster options") -> JobqueueConfig:
    """Merge ``$LOWDOSE_CLUSTER_OPTIONS`` and ``extra`` into a validated :class:`JobqueueConfig`."""
    merged: dict[str, Any] = {}
    env_file = os.environ.get(OPTIONS_ENV)
    if env_file:
        merged.update(options_from_file(env_file))
        source = f"{env_file} + {source}"
    merged.update(_normalise(extra or {}))
    return validate_config(JobqueueConfig, merged, source)


def _common_kwargs(config: JobqueueConfig, config_name: str) -> dict[str, Any]:
    import dask

    kwargs: dict[str, Any] = {}
    for name in ("cores", "memory", "processes", "walltime", "queue", "account", "interface"):
        value = getattr(config, name)
        if value is not None:
            kwargs[name] = value
    for name in ("local_directory", "log_directory", "python"):
        value = getattr(config, name)
        if value is not None:
            kwargs[name] = value
    if config.job_script_prologue:
        kwargs["job_script_prologue"] = list(config.job_script_prologue)
    worker_args = list(config.worker_extra_args)
    if config.gpus_per_job:
        # Lets GPU tasks ask the scheduler for a device (resources={"GPU": 1}).
        worker_args += ["--resources", f"GPU={config.gpus_per_job}"]
    if worker_args:
        kwargs["worker_extra_args"] = worker_args
    # dask-jobqueue ignores its configured scheduler-options when any are passed: merge them.
    scheduler = dict(dask.config.get(f"jobqueue.{config_name}.scheduler-options", None) or {})
    scheduler.setdefault("dashboard_address", ":0")  # a free port, not a clash on :8787
    if config.scheduler_host:
        scheduler["host"] = config.scheduler_host
    kwargs["scheduler_options"] = scheduler
    return kwargs


def slurm_kwargs(config: JobqueueConfig) -> dict[str, Any]:
    """``SLURMCluster`` keyword arguments for ``config``."""
    kwargs = _common_kwargs(config, "slurm")
    directives = list(config.job_extra_directives)
    if config.gpus_per_job:
        directives.append(f"--gres=gpu:{config.gpus_per_job}")
    if directives:
        kwargs["job_extra_directives"] = directives
    return kwargs


def pbs_kwargs(config: JobqueueConfig) -> dict[str, Any]:
    """``PBSCluster`` keyword arguments for ``config``.

    With GPUs the ``select`` resource spec is written here (dask-jobqueue's
    default has no ``ngpus``); it needs ``cores`` and ``memory`` from the config.
    """
    kwargs = _common_kwargs(config, "pbs")
    if config.job_extra_directives:
        kwargs["job_extra_directives"] = list(config.job_extra_directives)
    if config.gpus_per_job:
        import dask
        from dask.utils import parse_bytes

        cores = config.cores or dask.config.get("jobqueue.pbs.cores", None)
        memory = config.memory or dask.config.get("jobqueue.pbs.memory", None)
        if not cores or not memory:
            raise ConfigError("gpus_per_job: a PBS GPU job needs cores and memory as well")
        memory_gb = math.ceil(parse_bytes(str(memory)) / 1e9)
        kwargs["resource_spec"] = f"select=1:ncpus={cores}:ngpus={config.gpus_per_job}:mem={memory_gb}GB"
    return kwargs


def _scale(cluster: Any, config: JobqueueConfig, options: ClusterOptions) -> Any:
    if config.adaptive:
        cluster.adapt(minimum_jobs=config.minimum_jobs or 0, maximum_jobs=config.maximum_jobs or 1)
    elif config.jobs is not None:
        cluster.scale(jobs=config.jobs)
    else:
        per_job = int(getattr(cluster._dummy_job, "worker_processes", 1) or 1)
        cluster.scale(jobs=max(1, math.ceil((options.n_workers or per_job) / per_job)))
    return cluster


def _import(class_name: str) -> Any:
    try:
        import dask_jobqueue
    except ImportError as err:
        raise ImportError(
            "the slurm/pbs backends need dask-jobqueue: pip install 'lowdose[cluster]'"
        ) from err
    return getattr(dask_jobqueue, class_name)


def build_slurm_cluster(config: JobqueueConfig, **kwargs: Any) -> Any:
    """An unscaled ``SLURMCluster`` for ``config`` (``job_script()`` works without SLURM)."""
    return _import("SLURMCluster")(**{**slurm_kwargs(config), **kwargs})


def build_pbs_cluster(config: JobqueueConfig, **kwargs: Any) -> Any:
    """An unscaled ``PBSCluster`` for ``config`` (``job_script()`` works without PBS)."""
    return _import("PBSCluster")(**{**pbs_kwargs(config), **kwargs})


def slurm_cluster(options: ClusterOptions) -> Any:
    """Backend ``slurm``: a scaled ``dask_jobqueue.SLURMCluster``."""
    config = jobqueue_config(options.extra, "--cluster slurm options")
    return _scale(build_slurm_cluster(config), config, options)


def pbs_cluster(options: ClusterOptions) -> Any:
    """Backend ``pbs``: a scaled ``dask_jobqueue.PBSCluster``."""
    config = jobqueue_config(options.extra, "--cluster pbs options")
    return _scale(build_pbs_cluster(config), config, options)
