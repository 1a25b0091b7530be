"""The CRDs on a real API server: samples accepted, bad objects rejected naming the field."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.e2e.conftest import REPO, Kubectl


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> Kubectl:
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "!nonexistent", "--all")
    return kubectl


def test_samples_are_accepted(crds: Kubectl) -> None:
    crds.run("apply", "--server-side", "-f", str(REPO / "examples"))
    nodes = json.loads(crds.run("get", "edgenodes", "-n", "traffic-city", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == [f"pi-{i}" for i in range(5)]
    # Defaults from the schema are filled in by the API server.
    policy = json.loads(crds.run("get", "pp", "traffic-city", "-n", "traffic-city", "-o", "json").stdout)
    assert policy["spec"]["reward"]["alpha"] == 1.0
    cameras = crds.run("get", "cam", "-n", "traffic-city").stdout
    assert "EDGE-NODE" in cameras and "camera-0" in cameras


def _apply(kubectl: Kubectl, document: dict) -> str:
    result = kubectl.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(document), check=False)
    assert result.returncode != 0, f"expected the API server to reject {document}"
    return result.stderr


def _object(kind: str, spec: dict) -> dict:
    return {
        "apiVersion": "edgeaigc.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("Camera", {"edgeNode": "pi-0", "fps": 0}, "spec.fps"),
        ("Camera", {"fps": 2}, "spec.edgeNode: Required value"),
        (
            "InferenceModel",
            {"stage": "segmentation", "size": "3Mi", "workMs": 20},
            'spec.stage: Unsupported value: "segmentation"',
        ),
        ("InferenceModel", {"stage": "detection", "size": "three", "workMs": 20}, "spec.size"),
        (
            "InferenceModel",
            {"stage": "detection", "size": "3Mi", "workMs": 20, "artifact": {"url": "https://models.example/x.onnx"}},
            "spec.artifact.sha256 is required with spec.artifact.url",
        ),
        (
            "InferenceModel",
            {
                "stage": "detection",
                "size": "3Mi",
                "workMs": 20,
                "artifact": {"url": "https://m/x", "sha256": "a" * 64, "image": "reg/x:1"},
            },
            "exactly one of url, persistentVolumeClaim or image",
        ),
        ("EdgeNode", {"nodeName": "pi-0", "modelStorage": "24Mi", "cores": -1}, "spec.cores"),
        (
            "EdgeNode",
            {"nodeName": "pi-0", "modelStorage": "24Mi", "cores": 4, "site": "North_1"},
            "spec.site in body should match",
        ),
        ("PlacementPolicy", {"algorithm": "ddpg"}, "spec.actor is required when spec.algorithm is ddpg"),
        ("PlacementPolicy", {"algorithm": "lru", "intervalSeconds": 1}, "spec.intervalSeconds"),
        ("PlacementPolicy", {"algorithm": "lru", "reward": {"alpha": 0, "beta": 0}}, "cannot both be 0"),
        ("PlacementPolicy", {"algorithm": "genetic"}, 'spec.algorithm: Unsupported value: "genetic"'),
        (
            "PlacementPolicy",
            {"algorithm": "lru", "prometheusSelector": 'namespace="a"}[5m]) or vector(1'},
            "spec.prometheusSelector must be PromQL label matchers",
        ),
        (
            "PlacementPolicy",
            {"algorithm": "lru", "edgeNodeSelector": {"matchExpressions": [{"key": "site", "operator": "In"}]}},
            "In and NotIn need values; Exists and DoesNotExist take none",
        ),
        (
            "PlacementPolicy",
            {"algorithm": "lru", "edgeNodeSelector": {"matchExpressions": [{"key": "site", "operator": "Near"}]}},
            'Unsupported value: "Near"',
        ),
    ],
)
def test_bad_objects_are_rejected_naming_the_field(crds: Kubectl, kind: str, spec: dict, message: str) -> None:
    assert message in _apply(crds, _object(kind, spec))


def test_status_is_a_subresource(crds: Kubectl) -> None:
    """Writing status through the main resource is ignored; the status subresource takes it."""
    crds.run("apply", "--server-side", "-f", str(REPO / "examples"))
    patch = json.dumps({"status": {"cachedModelsSummary": "det-yolox-nano-day"}})
    crds.run("patch", "en", "pi-0", "-n", "traffic-city", "--type=merge", "-p", patch)
    got = json.loads(crds.run("get", "en", "pi-0", "-n", "traffic-city", "-o", "json").stdout)
    assert "cachedModelsSummary" not in got.get("status", {})
    crds.run("patch", "en", "pi-0", "-n", "traffic-city", "--type=merge", "--subresource=status", "-p", patch)
    got = json.loads(crds.run("get", "en", "pi-0", "-n", "traffic-city", "-o", "json").stdout)
    assert got["status"]["cachedModelsSummary"] == "det-yolox-nano-day"
