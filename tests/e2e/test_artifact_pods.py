"""Model pods with an artifact on a real API server: schema, image volumes and Pod Security "restricted".

Server-side dry runs in a namespace that enforces the "restricted" profile. Pod Security admission
rejects Pods (and only warns for Deployments), so each built Deployment is dry-run both as is
(no warning expected) and as the Pod its ReplicaSet would create (must be admitted).
"""

from __future__ import annotations

import copy
import uuid

import pytest
import yaml

from edgeaigc.operator import builders
from tests.e2e.conftest import REPO, Kubectl

POLICY = {"metadata": {"name": "city", "namespace": "", "uid": str(uuid.uuid4())}}
ARTIFACTS = {
    "url": {"url": "https://models.example/det.onnx", "sha256": "ab" * 32},
    "claim": {"persistentVolumeClaim": {"claimName": "models", "path": "detectors/det.onnx"}, "sha256": "ab" * 32},
    "image": {"image": "registry.example/models/det:1", "imagePath": "onnx/model.onnx"},
}


@pytest.fixture(scope="module")
def restricted(kubectl: Kubectl) -> str:
    namespace = f"artifacts-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    kubectl.run(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
    )
    return namespace


def _deployments(namespace: str, artifact: dict) -> list[dict]:
    policy = {**POLICY, "metadata": {**POLICY["metadata"], "namespace": namespace}}
    return [
        builders.build_edge_deployment(
            policy, "det", "pi-0", "pi-0", 500, 128, "ghcr.io/edgeaigc/inference:0.1.0", artifact, 3.7
        ),
        builders.build_cloud_deployment(policy, "det", "ghcr.io/edgeaigc/inference:0.1.0", artifact, 3.7),
        # On a node that shares its site: the peers ConfigMap volume and --serve-artifacts (with a sha256).
        builders.build_edge_deployment(
            policy, "det", "pi-1", "pi-1", 500, 128, "ghcr.io/edgeaigc/inference:0.1.0", artifact, 3.7, shares_site=True
        ),
    ]


def _pod_of(deployment: dict) -> dict:
    template = copy.deepcopy(deployment["spec"]["template"])
    metadata = {
        **template["metadata"],
        "name": f"{deployment['metadata']['name']}-x",
        "namespace": deployment["metadata"]["namespace"],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def _dry_run(kubectl: Kubectl, document: dict, check: bool = True):
    return kubectl.run(
        "create", "--dry-run=server", "-o", "yaml", "-f", "-", stdin=yaml.safe_dump(document), check=check
    )


def _contains(stored: object, sent: object) -> bool:
    """Every field sent is stored with its value (the API server may add defaults)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(k in stored and _contains(stored[k], v) for k, v in sent.items())
    return stored == sent


@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_built_deployments_pass_the_schema_and_pod_security_restricted(
    kubectl: Kubectl, restricted: str, kind: str
) -> None:
    for deployment in _deployments(restricted, ARTIFACTS[kind]):
        result = _dry_run(kubectl, deployment)
        assert "PodSecurity" not in result.stderr, result.stderr
        stored = yaml.safe_load(result.stdout)["spec"]["template"]["spec"]
        # Nothing was dropped on the way in (a field of a disabled feature would be); defaults are added.
        built = deployment["spec"]["template"]["spec"]["volumes"]
        assert [(v["name"], sorted(v)) for v in stored["volumes"]] == [(v["name"], sorted(v)) for v in built]
        for kept, sent in zip(stored["volumes"], built, strict=True):
            assert _contains(kept, sent), f"{sent} became {kept}"
        assert [k["name"] for k in stored["initContainers"]] == [builders.FETCH_CONTAINER]
        pod = _dry_run(kubectl, _pod_of(deployment))
        assert yaml.safe_load(pod.stdout)["spec"]["initContainers"][0]["args"][0] == "fetch-model"


def test_the_namespace_really_enforces_restricted(kubectl: Kubectl, restricted: str) -> None:
    """The control: the same pod without a seccomp profile in its init container is refused."""
    pod = _pod_of(_deployments(restricted, ARTIFACTS["image"])[0])
    del pod["spec"]["initContainers"][0]["securityContext"]["seccompProfile"]
    result = _dry_run(kubectl, pod, check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr and "fetch-model" in result.stderr


def _model(artifact: dict) -> dict:
    return {
        "apiVersion": "edgeaigc.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "det", "namespace": "default"},
        "spec": {"stage": "detection", "size": "3789Ki", "workMs": 28, "artifact": artifact},
    }


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ({"url": "https://m.example/x.onnx", "sha256": "a" * 64, "imagePath": "x.onnx"}, "imagePath is only used"),
        ({"image": "reg/x:1", "imagePath": "onnx/../../x.onnx"}, "spec.artifact.imagePath: Invalid value"),
        ({"persistentVolumeClaim": {"claimName": "m", "path": "../x.onnx"}}, "persistentVolumeClaim.path"),
    ],
)
def test_artifact_paths_are_checked_by_the_crd(kubectl: Kubectl, artifact: dict, message: str) -> None:
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds" / "edgeaigc.io_inferencemodels.yaml"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferencemodels.edgeaigc.io")
    result = _dry_run(kubectl, _model(artifact), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_every_artifact_kind_is_accepted_by_the_crd(kubectl: Kubectl) -> None:
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds" / "edgeaigc.io_inferencemodels.yaml"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferencemodels.edgeaigc.io")
    for artifact in ARTIFACTS.values():
        stored = yaml.safe_load(_dry_run(kubectl, _model(artifact)).stdout)
        assert stored["spec"]["artifact"] == artifact
