"""Kubernetes cluster backend: a dask-kubernetes operator ``KubeCluster`` from a spec file.

The spec is a ``DaskCluster`` resource (``kubernetes.dask.org/v1``), e.g.
``deploy/kubernetes/daskcluster.yaml``; it is named by the ``spec`` option
(``connect("kubernetes", spec=...)``), the ``cluster: {options: {spec: ...}}``
block, or the ``LOWDOSE_KUBE_SPEC`` environment variable. The operator must be
installed in the cluster and a kubeconfig (or in-cluster service account) must
be available. No science here; imports dask-kubernetes only inside functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field

from lowdose.config.base import LowdoseConfig, validate_config
from lowdose.errors import ConfigError, LowdoseInputError

if TYPE_CHECKING:
    from lowdose.parallel.cluster import ClusterOptions

SPEC_ENV = "LOWDOSE_KUBE_SPEC"
"""Environment variable naming the ``DaskCluster`` spec file."""

DASK_API_VERSION = "kubernetes.dask.org/v1"


class KubernetesOptions(LowdoseConfig):
    """Options of the ``kubernetes`` backend."""

    spec: str | None = Field(
        default=None,
        description=f"DaskCluster spec file (default: ${SPEC_ENV}), e.g. deploy/kubernetes/daskcluster.yaml.",
    )
    namespace: str | None = Field(
        default=None, description="Namespace (default: the spec's metadata.namespace)."
    )


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check a ``DaskCluster`` spec file."""
    source = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except OSError as err:
        raise ConfigError(f"{source}: cannot read the DaskCluster spec ({err.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{source}: not valid YAML") from None
    clusters = [d for d in docs if isinstance(d, dict) and d.get("kind") == "DaskCluster"]
    if len(clusters) != 1:
        raise ConfigError(
            f"{source}: expected exactly one 'kind: DaskCluster' document, found {len(clusters)}"
        )
    spec = clusters[0]
    if spec.get("apiVersion") != DASK_API_VERSION:
        raise ConfigError(
            f"{source}: apiVersion: expected {DASK_API_VERSION!r}, got {spec.get('apiVersion')!r}"
        )
    if not isinstance(spec.get("metadata"), dict) or not spec["metadata"].get("name"):
        raise ConfigError(f"{source}: metadata.name: the DaskCluster needs a name")
    for part in ("scheduler", "worker"):
        if not isinstance((spec.get("spec") or {}).get(part), dict):
            raise ConfigError(f"{source}: spec.{part}: missing")
    return spec


def kubernetes_cluster(options: ClusterOptions) -> Any:
    """Backend ``kubernetes``: a ``dask_kubernetes.operator.KubeCluster`` built from the spec file."""
    settings = validate_config(KubernetesOptions, options.extra, "--cluster kubernetes options")
    spec_path = settings.spec or os.environ.get(SPEC_ENV)
    if not spec_path:
        raise ConfigError(
            f"--cluster kubernetes: give the DaskCluster spec file (option 'spec' or ${SPEC_ENV})"
        )
    spec = load_spec(spec_path)
    if options.n_workers:
        spec["spec"]["worker"]["replicas"] = options.n_workers
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as err:
        raise ImportError(
            "--cluster kubernetes needs dask-kubernetes: pip install 'lowdose[cluster]'"
        ) from err
    namespace = settings.namespace or spec["metadata"].get("namespace")
    try:
        return KubeCluster(custom_cluster_spec=spec, namespace=namespace)
    except ValueError as err:
        if "credentials" not in str(err):
            raise
        raise LowdoseInputError(
            "--cluster kubernetes: no Kubernetes credentials (set KUBECONFIG or run inside the cluster)"
        ) from None
