"""The traffic-city fleet under a TD3 policy with a hand-built actor, for the guard and learning e2e tests.

Both start the same thing (the CRDs, the fleet with the guard on, the actor's ConfigMap, the twin
playing the gateways) and read the policy the same way; only the operator's flags differ.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeaigc.cluster.local import ClusterState
from edgeaigc.cluster.processes import spawn_edgeaigc, spawn_twin, stop
from tests.e2e.conftest import REPO, Kubectl, example_fleet


def build_actor(path: Path, keeps_the_placement: bool) -> Path:
    """An ONNX actor of the shipped network shape (exported as ``edgeaigc export`` does), weights set by hand.

    ``keeps_the_placement=False``: every cache score is -1, it caches nothing. True: the score is
    +1 for a model cached now and -1 otherwise (the ``cached`` feature passed through both layers),
    so it keeps whatever placement it finds. No share tilts in either.
    """
    torch = pytest.importorskip("torch")
    from edgeaigc.policy.export import export_actor
    from edgeaigc.policy.networks import Actor, PairContextLayer
    from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES

    actor = Actor(len(PAIR_FEATURES), len(CAMERA_FEATURES))
    with torch.no_grad():
        for parameter in actor.parameters():
            parameter.zero_()
        if keeps_the_placement:
            first, second = (layer for layer in actor.pair_body if isinstance(layer, PairContextLayer))
            first.own.weight[0, PAIR_FEATURES.index("cached")] = 1.0  # relu(cached) = cached
            second.own.weight[0, 0] = 1.0
            actor.pair_head.weight[0, 0] = 20.0
            actor.pair_head.bias.copy_(torch.tensor([-10.0, 0.0]))  # tanh(20 cached - 10): +-1
        else:
            actor.pair_head.bias.copy_(torch.tensor([-10.0, 0.0]))  # tanh(-10): cache nothing
    example = {
        "pair": np.zeros((2, 3, len(PAIR_FEATURES)), np.float32),
        "camera": np.zeros((4, len(CAMERA_FEATURES)), np.float32),
    }
    note = "keeps the placement" if keeps_the_placement else "caches nothing"
    return export_actor(actor, path, example, {"scenario": "guard-e2e", "algorithm": "td3", "note": note})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_city(
    cluster: ClusterState,
    kubectl: Kubectl,
    namespace: str,
    actor: Path,
    guard: dict[str, Any],
    interval_s: int,
    logs: Path,
) -> subprocess.Popen[bytes]:
    """The fleet ``city`` in ``namespace`` with ``actor`` in the ConfigMap ``city-actor``; returns the twin."""
    if cluster.prometheus_url is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus); the operator needs it")
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    documents = example_fleet(
        namespace,
        "city",
        algorithm="td3",
        intervalSeconds=interval_s,
        prometheusURL=cluster.prometheus_url,
        churnLimit=2,
        actor={"configMapName": "city-actor", "key": "actor.onnx"},
        guard=guard,
    )
    kubectl.run("create", "namespace", namespace)
    kubectl.run("create", "configmap", "city-actor", "-n", namespace, f"--from-file=actor.onnx={actor}")
    kubectl.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(documents))
    # Seed 0 starts the simulated day at a busy hour, when caching pays.
    return spawn_twin(namespace, cluster.directory, logs / "twin.log", cluster.kubeconfig, seed=0)


@contextlib.contextmanager
def operator_running(
    cluster: ClusterState,
    kubectl: Kubectl,
    namespace: str,
    twin: subprocess.Popen[bytes],
    arguments: Sequence[str],
    logs: Path,
) -> Iterator[None]:
    """``edgeaigc operator ARGUMENTS`` for the fleet; at the end it and the twin stop, the namespace goes."""
    operator = spawn_edgeaigc(list(arguments), logs / "operator.log", cluster.kubeconfig)
    try:
        yield
    finally:
        stop(operator)
        stop(twin)
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
        print((logs / "operator.log").read_text()[-4000:])


class CityPolicy:
    """Reads the PlacementPolicy ``city`` and the operator's metrics."""

    def __init__(self, kubectl: Kubectl, namespace: str, metrics_port: int) -> None:
        self.kubectl, self.namespace, self.metrics_port = kubectl, namespace, metrics_port

    def policy(self) -> dict[str, Any]:
        return json.loads(self.kubectl.run("get", "pp", "city", "-n", self.namespace, "-o", "json").stdout)

    def condition(self, kind: str) -> dict[str, Any]:
        conditions = self.policy().get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), {})

    def placed(self) -> set[tuple[str, str]]:
        placement = self.policy().get("status", {}).get("placement", [])
        return {(p["edgeNode"], m) for p in placement for m in p.get("models", [])}

    def metric(self, line_start: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(line_start):
                    return float(line.rsplit(" ", 1)[1])
        return None
