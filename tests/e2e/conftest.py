"""A real local control plane for the whole test session (etcd, apiserver, scheduler,
controller-manager, kwok, and Prometheus when installed), started once and torn down at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeaigc.cluster.components import BuildError, binaries, ensure_helm, run_helm
from edgeaigc.cluster.kubectl import run_kubectl
from edgeaigc.cluster.local import ClusterState, down, up

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    if shutil.which("go") is None and binaries().missing():
        pytest.skip("the local control plane needs Go to build its pinned binaries (none cached)")
    name = f"test-{os.getpid()}"
    os.environ["EDGEAIGC_CLUSTER_DIR"] = str(tmp_path_factory.mktemp("cluster"))
    # Prometheus scrapes every second so that tests reading rates need not wait long.
    state = up(name, progress=lambda message: print(f"[cluster] {message}"), timeout_s=90, scrape_interval_s=1.0)
    try:
        yield state
    finally:
        down(name, progress=lambda message: print(f"[cluster] {message}"))


class Kubectl:
    """kubectl (built from the pinned sources) against the test cluster."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def run(self, *arguments: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_kubectl(self.state.kubeconfig, *arguments, stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(arguments)} failed: {result.stderr}")
        return result


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterState) -> Kubectl:
    return Kubectl(cluster)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def example_fleet(namespace: str, policy_name: str, **policy_spec: Any) -> list[dict[str, Any]]:
    """The traffic-city samples of ``examples/`` moved into ``namespace``, the policy renamed and
    its spec updated with ``policy_spec`` (a value of None removes the key)."""
    documents = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == "Namespace":
                continue
            document["metadata"]["namespace"] = namespace
            if document["kind"] == "PlacementPolicy":
                document["metadata"]["name"] = policy_name
                document["spec"].update(policy_spec)
                document["spec"] = {k: v for k, v in document["spec"].items() if v is not None}
            documents.append(document)
    return documents


class Helm:
    """helm (the pinned binary) against the test cluster."""

    def __init__(self, binary: Path, state: ClusterState, home: Path) -> None:
        self.binary, self.state, self.home = binary, state, home

    def run(self, *arguments: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = run_helm(self.binary, self.state.kubeconfig, self.home, *arguments, timeout_s=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(arguments)} failed ({result.returncode}):\n{result.stderr}")
        return result


def pinned_helm(state: ClusterState, home: Path) -> Helm:
    """The pinned helm against ``state``'s cluster (the test is skipped when helm cannot be obtained)."""
    try:
        binary = ensure_helm(progress=print)
    except BuildError as error:
        pytest.skip(f"helm cannot be obtained: {error}")
    return Helm(binary, state, home)
