"""The local control plane behaves like a cluster: nodes Ready, real scheduling onto them."""

from __future__ import annotations

import json
import time

import yaml

from tests.e2e.conftest import Kubectl


def test_fake_nodes_are_ready_with_their_capacity(kubectl: Kubectl) -> None:
    deadline = time.monotonic() + 60
    while True:
        nodes = json.loads(kubectl.run("get", "nodes", "-o", "json").stdout)["items"]
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        }
        if len(ready) == len(nodes) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ready == {f"pi-{i}" for i in range(5)} | {"cloud-0"}
    pi = next(n for n in nodes if n["metadata"]["name"] == "pi-0")
    assert pi["status"]["allocatable"]["cpu"] == "4" and pi["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"


def test_scheduler_places_pods_by_labels_and_capacity(kubectl: Kubectl) -> None:
    """A Deployment pinned to edge nodes runs there; a pod larger than any Pi stays Pending."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "edge-probe", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "edge-probe"}},
            "template": {
                "metadata": {"labels": {"app": "edge-probe"}},
                "spec": {
                    "nodeSelector": {"edgeaigc.io/tier": "edge"},
                    "containers": [
                        {"name": "probe", "image": "example.invalid/probe:1", "resources": {"requests": {"cpu": "1"}}}
                    ],
                },
            },
        },
    }
    too_big = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big", "namespace": "default"},
        "spec": {
            "nodeSelector": {"edgeaigc.io/tier": "edge"},
            "containers": [{"name": "x", "image": "example.invalid/x:1", "resources": {"requests": {"cpu": "5"}}}],
        },
    }
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all([deployment, too_big]))
    kubectl.run("rollout", "status", "deployment/edge-probe", "-n", "default", "--timeout=60s")
    pods = json.loads(kubectl.run("get", "pods", "-n", "default", "-l", "app=edge-probe", "-o", "json").stdout)["items"]
    assert len(pods) == 3
    assert all(p["spec"]["nodeName"].startswith("pi-") and p["status"]["phase"] == "Running" for p in pods)
    pending = json.loads(kubectl.run("get", "pod", "too-big", "-n", "default", "-o", "json").stdout)
    assert pending["status"]["phase"] == "Pending" and "nodeName" not in pending["spec"]
    kubectl.run("delete", "deployment/edge-probe", "pod/too-big", "-n", "default", "--wait=true", "--timeout=60s")
