"""What each model replica did over an interval, read from the replica itself, for sim-to-real's p95 and
CPU seconds per request.

The gateway's latency histogram has no ``model`` label (``docs/metrics-contract.md``: per node and place
only), and Prometheus does not scrape the replicas, so the demo reads each Ready replica (edge on the Pi,
cloud on the cloud node, both real nodes in ``demo --real``) once per interval:

- its model server's ``edgeaigc_request_duration_seconds`` histogram (``GET /metrics`` on the pod's
  address): the replica's side of a request, from its first byte to the last byte of the answer — JSON
  decoding, the CFS quota's waits and the inference, but not the gateway's uplink pacing or its relay;
- its container's CPU time (cgroup v1 ``cpuacct.usage`` under the real node's kubelet cgroups,
  :func:`~edgeaigc.cluster.realnode.container_cgroup_files`): all the replica's processes, HTTP and
  decoding included, which over the requests it answered is its CPU seconds per request.

Both are cumulative since the replica started; :class:`ReplicaMeter` keeps each replica's last reading
(one with no request yet included) and hands out the difference. A replica first seen mid-run counts its
requests from its start, which was then, but not its CPU: that first interval's CPU is its start-up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from edgeaigc.inference.metrics_contract import REQUEST_DURATION_SECONDS, REQUEST_LATENCY_BUCKETS
from edgeaigc.operator.constants import INFERENCE_PORT
from edgeaigc.policy.resources import COMPONENT_CLOUD_INFERENCE, COMPONENT_EDGE_INFERENCE, LABEL_COMPONENT, LABEL_MODEL

#: The place that serves, by the component label of edge and cloud replicas.
PLACES = {COMPONENT_EDGE_INFERENCE: "edge", COMPONENT_CLOUD_INFERENCE: "cloud"}


@dataclasses.dataclass
class ReplicaInterval:
    """What the replicas of one (model, place) did over an interval (or, as a reading, since they started)."""

    requests: float
    seconds: float
    """Their request durations summed (over ``requests``: the replica-side mean)."""
    buckets: list[float]
    """Cumulative request counts at :data:`REQUEST_LATENCY_BUCKETS`, then ``+Inf``."""
    cpu_seconds: float | None = None
    """Their containers' CPU time (None: not readable, e.g. a replica on a kwok node)."""


def parse_duration_histogram(text: str, model: str) -> ReplicaInterval:
    """``model``'s request-duration histogram in a model server's ``/metrics`` text, summed over its other
    labels (``served_by``: a cloud replica's server may call itself ``edge``; the pod says where it is). A
    server that has not answered a request of it yet has none: zero requests, a reading all the same."""
    from prometheus_client.parser import text_string_to_metric_families

    bounds = [*REQUEST_LATENCY_BUCKETS, float("inf")]
    buckets = [0.0] * len(bounds)
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_DURATION_SECONDS:
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                if le in bounds:
                    buckets[bounds.index(le)] += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return ReplicaInterval(count, total, buckets)


def difference(current: ReplicaInterval, previous: ReplicaInterval | None) -> ReplicaInterval:
    """What happened between two readings of one replica. Without an earlier reading (a replica started since)
    or after a counter went down (a new process: a container restart), the requests since that start, but no
    CPU: the start (a Python server, an onnxruntime session: seconds of CPU) is not the requests' work."""
    if previous is None or current.requests < previous.requests:
        return dataclasses.replace(current, buckets=list(current.buckets), cpu_seconds=None)
    cpu = None
    if current.cpu_seconds is not None and previous.cpu_seconds is not None:
        cpu = max(0.0, current.cpu_seconds - previous.cpu_seconds)
    return ReplicaInterval(
        current.requests - previous.requests,
        max(0.0, current.seconds - previous.seconds),
        [max(0.0, now - before) for now, before in zip(current.buckets, previous.buckets, strict=True)],
        cpu,
    )


def merge(intervals: Iterable[ReplicaInterval]) -> ReplicaInterval:
    """Several replicas' (or intervals') figures as one; CPU only if every one of them had it."""
    chosen = list(intervals)
    cpu = [i.cpu_seconds for i in chosen]
    return ReplicaInterval(
        sum(i.requests for i in chosen),
        sum(i.seconds for i in chosen),
        [sum(values) for values in zip(*(i.buckets for i in chosen), strict=True)] if chosen else [],
        None if not chosen or any(c is None for c in cpu) else sum(c for c in cpu if c is not None),
    )


def _container_cpu_seconds(pod: dict[str, Any]) -> float | None:
    from edgeaigc.cluster.realnode import container_cgroup_files

    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    container_id = str(statuses[0].get("containerID", "")).partition("://")[2]
    node = pod.get("spec", {}).get("nodeName", "")
    if not container_id or not node:
        return None
    files = container_cgroup_files(node, container_id, "cpuacct", "cpuacct.usage")
    try:
        return int(files[0].read_text()) / 1e9 if files else None
    except (OSError, ValueError):
        return None


def _scrape(pod: dict[str, Any]) -> str | None:
    import httpx

    address = pod.get("status", {}).get("podIP")
    containers = pod.get("spec", {}).get("containers") or [{}]
    probe = containers[0].get("readinessProbe", {}).get("httpGet", {})
    scheme = str(probe.get("scheme", "HTTP")).lower()
    if not address:
        return None
    try:
        # The replica's certificate names its Service, not its pod address, and /metrics needs no client
        # certificate: the pod's address is in the cluster's own range on this machine, so no verification.
        response = httpx.get(f"{scheme}://{address}:{INFERENCE_PORT}/metrics", timeout=5, verify=False)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


@dataclasses.dataclass
class ReplicaMeter:
    """Each replica's last reading (by pod uid), to hand out what the replicas did since the last call."""

    last: dict[str, ReplicaInterval] = dataclasses.field(default_factory=dict)

    def read(self, pods: Iterable[dict[str, Any]]) -> dict[str, dict[str, ReplicaInterval]]:
        """Model -> place -> what its replicas among ``pods`` did since the previous call (a replica's first
        reading is a baseline when ``self.last`` is empty, i.e. on the first call: see :meth:`baseline`)."""
        by_place: dict[tuple[str, str], list[ReplicaInterval]] = {}
        for pod in pods:
            metadata = pod.get("metadata", {})
            labels = metadata.get("labels", {})
            place = PLACES.get(labels.get(LABEL_COMPONENT, ""))
            model, uid = labels.get(LABEL_MODEL), metadata.get("uid", "")
            if place is None or model is None:
                continue
            text = _scrape(pod)
            try:
                reading = parse_duration_histogram(text, model) if text is not None else None
            except ValueError:  # a truncated exposition (the replica went mid-answer): no reading this time
                reading = None
            if reading is None:  # not answering yet: its first reading will count from its start
                continue
            reading.cpu_seconds = _container_cpu_seconds(pod)
            by_place.setdefault((model, place), []).append(difference(reading, self.last.get(uid)))
            self.last[uid] = reading
        figures: dict[str, dict[str, ReplicaInterval]] = {}
        for (model, place), intervals in by_place.items():
            figures.setdefault(model, {})[place] = merge(intervals)
        return figures

    def baseline(self, pods: Iterable[dict[str, Any]]) -> None:
        """Take the replicas' readings now, so that the next :meth:`read` counts from here."""
        self.read(pods)
