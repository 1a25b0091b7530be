"""Prometheus targets for the pods of real nodes, from their ``prometheus.io/*`` annotations.

A user's Prometheus finds the chart's pods with ``kubernetes_sd_configs`` and the annotations
``prometheus.io/scrape``, ``/port`` and ``/path``. Debian's Prometheus is built without the
Kubernetes service discovery, so the local cluster runs this small process instead: every few
seconds it lists the pods, keeps the annotated, running pods of real nodes whose address is in
the cluster's own pod range, and writes them as one ``file_sd`` file into Prometheus' targets
folder (the same labels a ``kubernetes_sd`` relabelling would give: namespace, pod, node).

Run by ``edgeaigc cluster up --real-nodes N`` as ``python -m edgeaigc.cluster.pod_targets``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeaigc.cluster import network
from edgeaigc.cluster.prometheus import targets_dir

#: Job label of the pods' targets.
PODS_JOB = "kubernetes-pods"
TARGET_FILE = "kubernetes-pods.json"


def pod_target_groups(pods: Iterable[Mapping[str, Any]], real_nodes: Sequence[str]) -> list[dict[str, Any]]:
    """``file_sd`` target groups of the pods that ask to be scraped and really run on a real node."""
    pod_range = ipaddress.ip_network(network.POD_CIDR)
    groups = []
    for pod in pods:
        metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        annotations = metadata.get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or spec.get("nodeName") not in real_nodes:
            continue
        address, port = status.get("podIP"), annotations.get("prometheus.io/port", "")
        if status.get("phase") != "Running" or not address or not port.isdigit():
            continue
        # Only addresses of our own pod range: never a target elsewhere, whatever a pod reports.
        if ipaddress.ip_address(address) not in pod_range:
            continue
        labels = {
            "job": PODS_JOB,
            "namespace": metadata.get("namespace", ""),
            "pod": metadata.get("name", ""),
            "node": spec["nodeName"],
        }
        if annotations.get("prometheus.io/path"):
            labels["__metrics_path__"] = annotations["prometheus.io/path"]
        groups.append({"targets": [f"{address}:{port}"], "labels": labels})
    return sorted(groups, key=lambda group: group["targets"][0])


def write_targets(cluster_dir: Path, groups: list[dict[str, Any]]) -> bool:
    """Write the target file atomically when it changed; True if it did."""
    path = targets_dir(cluster_dir) / TARGET_FILE
    text = json.dumps(groups, indent=2)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dot-file does not match *.json, so Prometheus never reads a half-written file.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeaigc.cluster.pod_targets", description=__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--cluster-dir", required=True, type=Path)
    parser.add_argument("--real-node", action="append", default=[], required=True, help="a real node's name")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between listings (default: 2)")
    args = parser.parse_args(argv)
    from kubernetes import client, config

    config.load_kube_config(str(args.kubeconfig))
    api = client.CoreV1Api()
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        try:
            # The raw JSON (camelCase, as the API serves it), not the client's snake_case models.
            response = api.list_pod_for_all_namespaces(_request_timeout=10, _preload_content=False)
            pods = json.loads(response.data)["items"]  # type: ignore[attr-defined]
            write_targets(args.cluster_dir, pod_target_groups(pods, args.real_node))
        except Exception as error:  # a failed listing is retried; the last targets stay
            print(f"pod_targets: listing pods failed: {error}", file=sys.stderr, flush=True)
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
