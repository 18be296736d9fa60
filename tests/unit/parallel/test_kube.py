"""The kubernetes backend's spec loading (no Kubernetes API server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowdose.errors import ConfigError
from lowdose.parallel.cluster import ClusterOptions
from lowdose.parallel.kube import SPEC_ENV, kubernetes_cluster, load_spec

SPEC = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "daskcluster.yaml"


def test_load_spec_reads_the_deploy_daskcluster():
    spec = load_spec(SPEC)
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "lowdose"
    assert spec["spec"]["worker"]["replicas"] >= 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "Pod"}, "found 0"),
        ({"kind": "DaskCluster", "apiVersion": "v1", "metadata": {"name": "x"}}, "apiVersion"),
        ({"kind": "DaskCluster", "apiVersion": "kubernetes.dask.org/v1", "metadata": {}}, "metadata.name"),
        (
            {
                "kind": "DaskCluster",
                "apiVersion": "kubernetes.dask.org/v1",
                "metadata": {"name": "x"},
                "spec": {},
            },
            "spec.scheduler",
        ),
    ],
)
def test_bad_specs_are_config_errors(tmp_path, doc, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_spec(path)


def test_backend_needs_a_spec(monkeypatch):
    monkeypatch.delenv(SPEC_ENV, raising=False)
    with pytest.raises(ConfigError, match="DaskCluster spec"):
        kubernetes_cluster(ClusterOptions())


def test_backend_without_credentials_is_a_user_error(tmp_path, monkeypatch):
    from lowdose.errors import LowdoseInputError

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(LowdoseInputError, match="no Kubernetes credentials"):
        kubernetes_cluster(ClusterOptions(extra={"spec": str(SPEC)}))
