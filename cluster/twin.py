"""The traffic twin: a namespace's edge gateways played by the system model, with the gateways' metrics.

``edgeaigc twin`` reads the fleet (EdgeNode, InferenceModel, Camera, PlacementPolicy) from the API
server, turns it into the simulator's :class:`~edgeaigc.policy.scenario.Scenario` with the
operator's own :func:`~edgeaigc.policy.fleet.scenario_from_resources`, draws a long demand trace
(:class:`~edgeaigc.policy.demand.DemandGenerator`, seeded) and then, every tick:

1. reads the placement the cluster really runs: (edge node, model) is cached when the operator's
   edge Deployment for it (labels ``edgeaigc.io/policy``, ``edgeaigc.io/model``,
   ``edgeaigc.io/edge-node``) has a ready replica; its compute share is the CPU limit of its ready
   pods (as their kubelet reports it, so in-place resizes count) over ``EdgeNode.spec.cores``
   (clipped to [0, 1], scaled down per node if the shares add up to more than 1; a container
   without a limit may use the whole node); each camera's bandwidth share comes from the routing
   table ConfigMap (``edgeaigc-<policy>-routing``), or is an equal split of its node without one;
2. serves the slot's requests under that placement with
   :func:`~edgeaigc.policy.system_model.evaluate_slot` (the previous cache is the last tick's, so
   newly cached models pay their download);
3. adds them to the metrics served at ``/metrics`` — the request metrics of
   ``docs/metrics-contract.md`` with ``edge_node`` and ``camera`` labels, as the real gateways
   export them — and registers itself as a scrape target of the local cluster's Prometheus
   (job ``edgeaigc-gateway``).

**Time mapping.** One tick (``--tick-seconds``, 5 s by default) plays one slot of the trace: the
trace's clock — hour of day, popularity drift, variant switches, link states — advances by the
scenario's slot length (the policy's ``planningSlotSeconds``, 60 s by default) per tick, so the drift is
fast-forwarded ``slot_seconds / tick_seconds`` times (12x by default) and a simulated day takes
``86400 / slot_seconds`` ticks (2 hours by default). Request *rates* are not scaled: during a tick,
requests arrive at the slot's per-second rates (Poisson counts with mean ``rate x tick_seconds``),
so ``increase(edgeaigc_requests_total[N s]) / N`` reads the simulated demand in requests per
second, the unit the policy was trained on. Response times and bytes are per request, and cost
accrues per request served plus one download charge when a model becomes newly cached, so they
need no conversion either. An operator deciding every ``intervalSeconds`` of real time thus sees
several slots of drift between two decisions.

The API server is read every tick; when it cannot be read, or the policy is gone, the twin keeps
serving the last placement it saw and logs the problem (once, and again when it recovers).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgeaigc.cluster import prometheus as prom
from edgeaigc.cluster.local import DEFAULT_NAME, ClusterState, _alive, cluster_dir
from edgeaigc.inference.gateway.routing_table import RoutingTable, parse_routing_table
from edgeaigc.inference.metrics_contract import REQUEST_LATENCY_BUCKETS
from edgeaigc.policy import resources
from edgeaigc.policy.demand import DemandGenerator, EpisodeTrace
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.scenario import DemandConfig, Scenario, load_scenario
from edgeaigc.policy.system_model import (
    Plan,
    SlotOutcome,
    evaluate_slot,
    node_rates_of,
    node_serving,
    seconds_per_work,
    upload_needed,
)

log = logging.getLogger("edgeaigc.twin")

#: Scrape job of the twin (and of the real gateways).
JOB = "edgeaigc-gateway"
DEFAULT_TICK_SECONDS = 5.0
DEFAULT_NAMESPACE = "traffic-city"
SERVED_BY = ("edge", "cloud")

# The exported families' help texts and label names (the metrics contract; collect() and exposition() share them).
REQUESTS_HELP = "Inference requests answered, by model, HTTP status code, where they were served, edge node and camera."
REQUEST_LABELS = ("model", "code", "served_by", "edge_node", "camera")
DURATION_HELP = "Time from receiving an inference request to sending the last byte of its response."
PLACE_LABELS = ("model", "served_by", "edge_node")
BUCKET_LABELS = (*PLACE_LABELS, "le")
REQUEST_BYTES_HELP = "Bytes of inference request bodies received."
RESPONSE_BYTES_HELP = "Bytes of inference response bodies sent."
IN_FLIGHT_HELP = "Inference requests being handled now (the twin: mean over its last slot)."
IN_FLIGHT_LABELS = ("served_by", "edge_node")
LINK_HELP = "Spectral efficiency of a camera's uplink in its last slot, bit/s/Hz."
LINK_LABELS = ("edge_node", "camera")
SLOT_HELP = "Slots the traffic twin has served (one per tick)."
HOUR_HELP = "Hour of the simulated day at the twin's last slot."
HIT_RATE_HELP = "Share of the last slot's requests served at the edge."
COST_HELP = "Cost of the requests the twin served (cloud compute, transfer, edge energy, model downloads), dollars."

Resource = dict[str, Any]
#: (EdgeNode name, model name) -> compute share of the node.
ComputeShares = dict[tuple[str, str], float]
#: EdgeNode name -> camera name -> bandwidth share of the node.
BandwidthShares = dict[str, dict[str, float]]


class FleetUnavailable(RuntimeError):
    """The namespace has no usable PlacementPolicy (none, several without ``--policy``, or not the named one)."""


# --- the placement the cluster runs (pure) ---------------------------------------------------


def cpu_limit_cores(deployment: Mapping[str, Any]) -> float | None:
    """CPU limit of one replica (sum over its containers) in cores; None if a container has none."""
    total = 0.0
    for container in deployment["spec"]["template"]["spec"].get("containers", []):
        limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
        if limit is None:
            return None
        total += float(parse_quantity(str(limit)))
    return total


def pod_cpu_limit_cores(pod: Mapping[str, Any]) -> float | None:
    """CPU limit of a running pod in cores: what its kubelet reports (``status.containerStatuses[].resources``,
    the CPU after an in-place resize), else its spec; None if a container has no limit."""
    reported = {
        status.get("name"): (status.get("resources") or {}).get("limits", {}).get("cpu")
        for status in (pod.get("status") or {}).get("containerStatuses") or []
    }
    total = 0.0
    for container in pod["spec"].get("containers", []):
        limit = reported.get(container.get("name")) or ((container.get("resources") or {}).get("limits") or {}).get(
            "cpu"
        )
        if limit is None:
            return None
        total += float(parse_quantity(str(limit)))
    return total


def _ready(pod: Mapping[str, Any]) -> bool:
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    conditions = status.get("conditions") or []
    return not metadata.get("deletionTimestamp") and any(
        k.get("type") == "Ready" and k.get("status") == "True" for k in conditions
    )


def _pods_of(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    selector = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
    return [
        pod
        for pod in pods
        if _ready(pod)
        and all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
    ]


def compute_shares(
    deployments: Sequence[Mapping[str, Any]],
    policy: str,
    node_cores: Mapping[str, float],
    pods: Sequence[Mapping[str, Any]] = (),
) -> ComputeShares:
    """Cached (edge node, model) pairs and their compute shares, from the policy's edge Deployments.

    A pair is cached when its Deployment has ``status.readyReplicas >= 1``; its share is the CPU
    limit of its ready pods (as their kubelet reports it, so in-place resizes count) over the node's
    cores — or ``readyReplicas x`` the template's CPU limit when none of its pods is listed — clipped
    to [0, 1] (1 without a limit: the container may use the whole node), and a node's shares are
    scaled down together if they add up to more than 1. Deployments of another policy or component,
    or on an unknown EdgeNode, are ignored.
    """
    shares: ComputeShares = {}
    for deployment in deployments:
        labels = deployment.get("metadata", {}).get("labels") or {}
        if (
            labels.get(resources.LABEL_COMPONENT) != resources.COMPONENT_EDGE_INFERENCE
            or labels.get(resources.LABEL_POLICY) != policy
        ):
            continue
        node, model = str(labels.get(resources.LABEL_EDGE_NODE, "")), str(labels.get(resources.LABEL_MODEL, ""))
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if node not in node_cores or not model or ready < 1:
            continue
        running = _pods_of(deployment, pods)
        if running:
            limits = [pod_cpu_limit_cores(pod) for pod in running]
            cores = None if any(limit is None for limit in limits) else sum(limit or 0.0 for limit in limits)
        else:
            limit = cpu_limit_cores(deployment)
            cores = None if limit is None else ready * limit
        share = 1.0 if cores is None else cores / float(node_cores[node])
        shares[(node, model)] = min(max(shares.get((node, model), 0.0) + share, 0.0), 1.0)
    for node in {node for node, _ in shares}:
        total = sum(share for (n, _), share in shares.items() if n == node)
        if total > 1.0:
            for key in [key for key in shares if key[0] == node]:
                shares[key] /= total
    return shares


def bandwidth_shares(table: RoutingTable | None) -> BandwidthShares:
    """Camera bandwidth shares per edge node from a routing table (empty without one)."""
    if table is None:
        return {}
    return {node: dict(routes.camera_bandwidth_share) for node, routes in table.edge_nodes.items()}


def plan_for(scenario: Scenario, compute: Mapping[tuple[str, str], float], bandwidth: BandwidthShares) -> Plan:
    """The :class:`Plan` of the observed placement, indexed like ``scenario``.

    Pairs naming a node or model the scenario does not know are left out. A node's cameras take
    their shares from ``bandwidth`` when it lists all of them (scaled down if over 1), else split
    the node's bandwidth equally.
    """
    node_index = {name: e for e, name in enumerate(scenario.node_names)}
    model_index = {name: m for m, name in enumerate(scenario.model_names)}
    cache = np.zeros((scenario.num_nodes, scenario.num_models))
    share = np.zeros_like(cache)
    for (node, model), value in compute.items():
        if node in node_index and model in model_index:
            cache[node_index[node], model_index[model]] = 1.0
            share[node_index[node], model_index[model]] = value
    camera_share = np.zeros(scenario.num_cameras)
    for e, node in enumerate(scenario.node_names):
        cameras = np.flatnonzero(scenario.camera_node == e)
        if cameras.size == 0:
            continue
        listed = bandwidth.get(node, {})
        if all(scenario.camera_names[u] in listed for u in cameras):
            values = np.array([listed[scenario.camera_names[u]] for u in cameras], dtype=float)
            camera_share[cameras] = values / max(values.sum(), 1.0)
        else:
            camera_share[cameras] = 1.0 / cameras.size
    return Plan(cache=cache, compute_share=share, bandwidth_share=camera_share)


# --- one slot, served (pure) ------------------------------------------------------------------


def response_seconds(
    scenario: Scenario, plan: Plan, camera_rates: np.ndarray, link_quality: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Response time of a request of camera ``u`` for model ``m`` and whether it is a hit, ``[U, M]`` each.

    The same terms as :func:`~edgeaigc.policy.system_model.evaluate_slot` (upload on the camera's
    bandwidth share, then compute on the cached share or the cloud relay), per (camera, model)
    instead of summed; ``tests/unit/test_twin.py`` checks that both agree.
    """
    serving = node_serving(scenario, plan.cache, node_rates_of(scenario, camera_rates), plan.compute_share)
    uplink_capacity = scenario.node_bandwidth_mhz[scenario.camera_node] * link_quality
    uplink_needed = upload_needed(scenario, camera_rates, link_quality)
    uplink_spw = seconds_per_work(plan.bandwidth_share, uplink_needed, uplink_capacity, scenario.rho_max)
    upload = scenario.model_input_mbit[None, :] * uplink_spw[:, None]
    node = scenario.camera_node
    hit = plan.cache[node] > 0
    return upload + np.where(hit, serving.hit_seconds[node], serving.miss_seconds[node]), hit


@dataclasses.dataclass(frozen=True)
class ServedSlot:
    """What the twin did in one tick."""

    slot: int
    """Ticks served since the twin started (the ``edgeaigc_twin_slot`` gauge after this one)."""
    trace_slot: int
    hour_of_day: float
    finished_at: float
    """``time.time()`` when the metrics were updated."""
    scenario: Scenario
    counts: np.ndarray
    """Requests served in the tick, ``[U, M]``."""
    expected_rates: np.ndarray
    """Requests per second of the trace for the slot, ``[U, M]``."""
    seconds: np.ndarray
    """Response time of each request of (camera, model), ``[U, M]``."""
    hit: np.ndarray
    """Whether (camera, model) was served at the edge, ``[U, M]``."""
    link_quality: np.ndarray
    outcome: SlotOutcome


def serve_slot(
    scenario: Scenario,
    plan: Plan,
    counts: np.ndarray,
    link_quality: np.ndarray,
    previous_cache: np.ndarray,
    tick_seconds: float,
) -> tuple[SlotOutcome, np.ndarray, np.ndarray]:
    """Serve ``counts[u, m]`` requests arriving over one tick; return the outcome, response times and hits.

    The outcome is the system model's for a slot as long as the tick, so its cost covers exactly
    the requests counted (plus downloads).
    """
    rates = counts / tick_seconds
    outcome = evaluate_slot(
        scenario.with_overrides(slot_seconds=tick_seconds), plan, rates, link_quality, previous_cache
    )
    seconds, hit = response_seconds(scenario, plan, rates, link_quality)
    return outcome, seconds, hit


# --- metrics ------------------------------------------------------------------------------------


class TwinMetrics(Collector):
    """Cumulative request metrics and the twin's gauges, exported whole at each scrape.

    Slots are added with :meth:`add` (whole counts and histogram buckets at once), under a lock so
    a scrape never sees half a slot.
    """

    def __init__(self, buckets: Sequence[float] = REQUEST_LATENCY_BUCKETS) -> None:
        self.buckets = np.asarray(buckets, dtype=float)
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str, str, str], float] = {}
        self._bucket_counts: dict[tuple[str, str, str], np.ndarray] = {}
        self._duration_sum: dict[tuple[str, str, str], float] = {}
        self._request_bytes: dict[tuple[str, str, str], float] = {}
        self._response_bytes: dict[tuple[str, str, str], float] = {}
        self._in_flight: dict[tuple[str, str], float] = {}
        self._link: dict[tuple[str, str], float] = {}
        self._slot = 0
        self._hour = 0.0
        self._hit_rate = 0.0
        self._cost = 0.0
        self._initialised: set[tuple[tuple[str, ...], ...]] = set()
        self._label_text: dict[tuple[Any, ...], str] = {}

    def _initialise(self, scenario: Scenario) -> None:
        """Create every series of the fleet at zero (caller holds the lock).

        A counter that first appears in the middle of a query window loses its first increment to
        ``increase()``/``rate()``; starting all (camera, model, served_by) series at zero keeps the
        operator's rate query exact when a camera switches to a model it never used.
        """
        # Attachments count too: a camera moved to another node needs that node's series.
        attached = tuple(scenario.node_names[e] for e in scenario.camera_node)
        fleet = (scenario.node_names, scenario.camera_names, scenario.model_names, attached)
        if fleet in self._initialised:
            return
        self._initialised.add(fleet)
        for u, camera in enumerate(scenario.camera_names):
            node = scenario.node_names[scenario.camera_node[u]]
            for model in scenario.model_names:
                for where in SERVED_BY:
                    self._requests.setdefault((model, "200", where, node, camera), 0.0)
        for node in scenario.node_names:
            for model in scenario.model_names:
                for where in SERVED_BY:
                    place = (model, where, node)
                    self._bucket_counts.setdefault(place, np.zeros(self.buckets.size + 1))
                    self._duration_sum.setdefault(place, 0.0)
                    self._request_bytes.setdefault(place, 0.0)
                    self._response_bytes.setdefault(place, 0.0)

    def add(self, served: ServedSlot, tick_seconds: float) -> None:
        scenario = served.scenario
        input_bytes = scenario.model_input_mbit * 1e6 / 8
        output_bytes = scenario.model_output_mbit * 1e6 / 8
        bucket_index = np.searchsorted(self.buckets, served.seconds, side="left")  # le: seconds <= bound
        # Every gateway reports both places, as a real gateway's gauge does.
        in_flight = {(where, node): 0.0 for where in SERVED_BY for node in scenario.node_names}
        with self._lock:
            self._initialise(scenario)
            for u, m in zip(*np.nonzero(served.counts), strict=True):
                count = float(served.counts[u, m])
                where = "edge" if served.hit[u, m] else "cloud"
                model, node = scenario.model_names[m], scenario.node_names[scenario.camera_node[u]]
                camera = scenario.camera_names[u]
                self._requests[(model, "200", where, node, camera)] += count
                place = (model, where, node)
                self._bucket_counts[place][bucket_index[u, m]] += count
                self._duration_sum[place] += count * served.seconds[u, m]
                self._request_bytes[place] += count * input_bytes[m]
                self._response_bytes[place] += count * output_bytes[m]
                # Little's law: requests in flight on average = arrival rate x time in the system.
                in_flight[(where, node)] += count / tick_seconds * served.seconds[u, m]
            self._in_flight = in_flight
            self._link = {
                (scenario.node_names[scenario.camera_node[u]], scenario.camera_names[u]): float(served.link_quality[u])
                for u in range(scenario.num_cameras)
            }
            self._slot = served.slot
            self._hour = served.hour_of_day
            self._hit_rate = served.outcome.hit_rate
            self._cost += served.outcome.cost

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing to check at registration; families are built at scrape time

    def _labelled(self, name: str, names: Sequence[str], values: tuple[str, ...]) -> str:
        """``name{label="value",...}`` with the labels sorted, as the text format writes them (cached: a fleet's
        label sets do not change between scrapes)."""
        key = (name, *values)
        text = self._label_text.get(key)
        if text is None:
            pairs = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(zip(names, values, strict=True)))
            text = self._label_text[key] = f"{name}{{{pairs}}}" if pairs else name
        return text

    def exposition(self) -> bytes:
        """:meth:`collect` in the text format (0.0.4), exactly as :func:`prometheus_client.generate_latest` writes it.

        Written from the counters directly, with each series' labels formatted once: at 100 nodes x 20 models x
        400 cameras (~88 000 samples) ``generate_latest`` takes 1-4 s of a core, and under the benchmark's load
        the scrape took longer than Prometheus waits (10 s): whole intervals of samples were lost.
        """
        lines: list[str] = []

        def family(name: str, kind: str, documentation: str) -> None:
            escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
            lines.append(f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n")

        def sample(name: str, names: Sequence[str], values: tuple[str, ...], value: float) -> None:
            lines.append(f"{self._labelled(name, names, values)} {floatToGoString(value)}\n")

        bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]
        with self._lock:
            family("edgeaigc_requests_total", "counter", REQUESTS_HELP)
            for key, value in sorted(self._requests.items()):
                sample("edgeaigc_requests_total", REQUEST_LABELS, key, value)
            places = sorted(self._bucket_counts)
            family("edgeaigc_request_duration_seconds", "histogram", DURATION_HELP)
            for place in places:
                cumulative = np.cumsum(self._bucket_counts[place])
                for bound, count in zip(bounds, cumulative, strict=True):
                    sample("edgeaigc_request_duration_seconds_bucket", BUCKET_LABELS, (*place, bound), float(count))
                sample("edgeaigc_request_duration_seconds_count", PLACE_LABELS, place, float(cumulative[-1]))
                sample("edgeaigc_request_duration_seconds_sum", PLACE_LABELS, place, self._duration_sum[place])
            for name, documentation, values in (
                ("edgeaigc_request_bytes_total", REQUEST_BYTES_HELP, self._request_bytes),
                ("edgeaigc_response_bytes_total", RESPONSE_BYTES_HELP, self._response_bytes),
            ):
                family(name, "counter", documentation)
                for place in places:
                    sample(name, PLACE_LABELS, place, values[place])
            family("edgeaigc_requests_in_flight", "gauge", IN_FLIGHT_HELP)
            for gateway, value in sorted(self._in_flight.items()):
                sample("edgeaigc_requests_in_flight", IN_FLIGHT_LABELS, gateway, value)
            family("edgeaigc_camera_link_spectral_efficiency", "gauge", LINK_HELP)
            for camera, value in sorted(self._link.items()):
                sample("edgeaigc_camera_link_spectral_efficiency", LINK_LABELS, camera, value)
            for name, kind, documentation, value in (
                ("edgeaigc_twin_slot", "gauge", SLOT_HELP, float(self._slot)),
                ("edgeaigc_twin_hour_of_day", "gauge", HOUR_HELP, self._hour),
                ("edgeaigc_twin_hit_rate", "gauge", HIT_RATE_HELP, self._hit_rate),
                ("edgeaigc_twin_cost_dollars_total", "counter", COST_HELP, self._cost),
            ):
                family(name, kind, documentation)
                sample(name, (), (), value)
        return "".join(lines).encode()

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("edgeaigc_requests", REQUESTS_HELP, labels=list(REQUEST_LABELS))
        duration = HistogramMetricFamily("edgeaigc_request_duration_seconds", DURATION_HELP, labels=list(PLACE_LABELS))
        request_bytes = CounterMetricFamily("edgeaigc_request_bytes", REQUEST_BYTES_HELP, labels=list(PLACE_LABELS))
        response_bytes = CounterMetricFamily("edgeaigc_response_bytes", RESPONSE_BYTES_HELP, labels=list(PLACE_LABELS))
        in_flight = GaugeMetricFamily("edgeaigc_requests_in_flight", IN_FLIGHT_HELP, labels=list(IN_FLIGHT_LABELS))
        link = GaugeMetricFamily("edgeaigc_camera_link_spectral_efficiency", LINK_HELP, labels=list(LINK_LABELS))
        slot = GaugeMetricFamily("edgeaigc_twin_slot", SLOT_HELP)
        hour = GaugeMetricFamily("edgeaigc_twin_hour_of_day", HOUR_HELP)
        hit_rate = GaugeMetricFamily("edgeaigc_twin_hit_rate", HIT_RATE_HELP)
        cost = CounterMetricFamily("edgeaigc_twin_cost_dollars", COST_HELP)
        with self._lock:
            for request_key, value in sorted(self._requests.items()):
                requests.add_metric(list(request_key), value)
            for place, counts in sorted(self._bucket_counts.items()):
                cumulative = np.cumsum(counts)
                buckets = [(floatToGoString(b), float(n)) for b, n in zip(self.buckets, cumulative[:-1], strict=True)]
                buckets.append(("+Inf", float(cumulative[-1])))
                duration.add_metric(list(place), buckets, self._duration_sum[place])
                request_bytes.add_metric(list(place), self._request_bytes[place])
                response_bytes.add_metric(list(place), self._response_bytes[place])
            for gateway, value in sorted(self._in_flight.items()):
                in_flight.add_metric(list(gateway), value)
            for camera, value in sorted(self._link.items()):
                link.add_metric(list(camera), value)
            slot.add_metric([], self._slot)
            hour.add_metric([], self._hour)
            hit_rate.add_metric([], self._hit_rate)
            cost.add_metric([], self._cost)
        yield from (requests, duration, request_bytes, response_bytes, in_flight, link, slot, hour, hit_rate, cost)


# --- reading the cluster ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fleet:
    """The custom resources of one PlacementPolicy's namespace (as the API returns them)."""

    policy: Resource
    edge_nodes: list[Resource]
    models: list[Resource]
    cameras: list[Resource]

    def signature(self) -> str:
        """Changes when a spec changes (not on status updates): the scenario is rebuilt then."""
        specs = [
            [kind, item["metadata"]["name"], item.get("spec", {})]
            for kind, items in (
                ("policy", [self.policy]),
                ("node", self.edge_nodes),
                ("model", self.models),
                ("camera", self.cameras),
            )
            for item in items
        ]
        return json.dumps(sorted(specs, key=lambda entry: (entry[0], entry[1])), sort_keys=True)


class FleetSource(Protocol):
    """Where the twin reads the fleet and its placement (the API server; a fake in unit tests)."""

    def fleet(self, namespace: str, policy: str | None) -> Fleet: ...

    def edge_deployments(self, namespace: str, policy: str) -> list[Resource]: ...

    def routing_table(self, namespace: str, policy: str) -> str | None: ...

    def edge_pods(self, namespace: str, policy: str) -> list[Resource]: ...


class KubernetesSource:
    """Reads the fleet, the edge Deployments and the routing table from the API server."""

    def __init__(self, api_client: Any, request_timeout_s: float = 5.0) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.timeout = request_timeout_s
        self.objects = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def _items(self, namespace: str, plural: str) -> list[Resource]:
        result = self.objects.list_namespaced_custom_object(
            resources.GROUP, resources.VERSION, namespace, plural, _request_timeout=self.timeout
        )
        return list(result["items"])  # type: ignore[index]

    def fleet(self, namespace: str, policy: str | None) -> Fleet:
        policies = self._items(namespace, resources.PLURAL_POLICIES)
        chosen = [p for p in policies if policy is None or p["metadata"]["name"] == policy]
        if len(chosen) != 1:
            names = sorted(p["metadata"]["name"] for p in policies)
            wanted = f"PlacementPolicy {policy!r}" if policy else "exactly one PlacementPolicy (or --policy)"
            raise FleetUnavailable(f"namespace {namespace!r} needs {wanted}; it has {names or 'none'}")
        return Fleet(
            chosen[0],
            self._items(namespace, resources.PLURAL_EDGE_NODES),
            self._items(namespace, resources.PLURAL_MODELS),
            self._items(namespace, resources.PLURAL_CAMERAS),
        )

    def edge_deployments(self, namespace: str, policy: str) -> list[Resource]:
        selector = f"{resources.LABEL_COMPONENT}={resources.COMPONENT_EDGE_INFERENCE},{resources.LABEL_POLICY}={policy}"
        result = self.apps.list_namespaced_deployment(namespace, label_selector=selector, _request_timeout=self.timeout)
        return [self.api_client.sanitize_for_serialization(item) for item in result.items]

    def edge_pods(self, namespace: str, policy: str) -> list[Resource]:
        selector = f"{resources.LABEL_COMPONENT}={resources.COMPONENT_EDGE_INFERENCE},{resources.LABEL_POLICY}={policy}"
        result = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.timeout)
        return [self.api_client.sanitize_for_serialization(item) for item in result.items]

    def routing_table(self, namespace: str, policy: str) -> str | None:
        try:
            config_map = self.core.read_namespaced_config_map(
                resources.object_name(policy, "routing"), namespace, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return (config_map.data or {}).get(resources.ROUTING_TABLE_KEY)


#: What a read of the cluster may fail with; the twin then keeps what it last saw.
READ_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
    ValueError,  # InvalidFleet, InvalidRoutingTable, bad quantities
    KeyError,
    FleetUnavailable,
)


# --- the twin -----------------------------------------------------------------------------------


class Twin:
    """Plays the gateways of one PlacementPolicy's fleet, one slot per :meth:`step`.

    Args:
        source: where to read the fleet and the placement.
        namespace: the fleet's namespace.
        policy: the PlacementPolicy's name (None: the namespace's only one).
        seed: seeds the demand trace and the request counts.
        tick_seconds: real seconds per tick (requests per tick = rate x tick_seconds).
        trace_slots: slots per drawn trace (None: one simulated day); another is drawn after it.
        demand: demand settings replacing the fleet's defaults (e.g. a bundled scenario's).
        history: how many :class:`ServedSlot` records to keep in :attr:`history` (oldest dropped).
    """

    def __init__(
        self,
        source: FleetSource,
        namespace: str,
        policy: str | None = None,
        seed: int = 0,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
        trace_slots: int | None = None,
        demand: DemandConfig | None = None,
        history: int = 10_000,
    ) -> None:
        if tick_seconds <= 0:
            raise ValueError(f"tick_seconds must be > 0, got {tick_seconds}")
        self.source = source
        self.namespace = namespace
        self.policy = policy
        self.tick_seconds = tick_seconds
        self.trace_slots = trace_slots
        self.demand = demand
        self.rng = np.random.default_rng(seed)
        self.metrics = TwinMetrics()
        self.history: deque[ServedSlot] = deque(maxlen=history)
        self._history_lock = threading.Lock()
        self.scenario: Scenario | None = None
        self.policy_name: str | None = None
        self.trace: EpisodeTrace | None = None
        self.trace_slot = 0
        self.slot = 0
        self.compute: ComputeShares = {}
        self.bandwidth: BandwidthShares = {}
        self._signature: str | None = None
        self._previous: set[tuple[str, str]] = set()
        self._problems: dict[str, str] = {}

    def _problem(self, what: str, error: BaseException | None) -> None:
        """Log a read problem when it starts or changes, and when it is over."""
        if error is None:
            if self._problems.pop(what, None) is not None:
                log.info("%s: readable again", what)
            return
        message = f"{type(error).__name__}: {error}"
        if self._problems.get(what) != message:
            log.warning("%s: %s (keeping what was last read)", what, message)
        self._problems[what] = message

    def refresh(self) -> None:
        """Read the fleet and the placement; on failure keep the last ones (logged)."""
        try:
            fleet = self.source.fleet(self.namespace, self.policy)
            signature = fleet.signature()
            if signature != self._signature:
                self._rebuild(fleet)
                self._signature = signature
            self._problem("fleet", None)
        except READ_ERRORS as error:
            self._problem("fleet", error)
        if self.scenario is None or self.policy_name is None:
            return
        cores = dict(zip(self.scenario.node_names, self.scenario.node_cores.tolist(), strict=True))
        try:
            self.compute = compute_shares(
                self.source.edge_deployments(self.namespace, self.policy_name),
                self.policy_name,
                cores,
                self.source.edge_pods(self.namespace, self.policy_name),
            )
            self._problem("edge deployments", None)
        except READ_ERRORS as error:
            self._problem("edge deployments", error)
        try:
            text = self.source.routing_table(self.namespace, self.policy_name)
            self.bandwidth = bandwidth_shares(parse_routing_table(text) if text is not None else None)
            self._problem("routing table", None)
        except READ_ERRORS as error:
            self._problem("routing table", error)

    def _rebuild(self, fleet: Fleet) -> None:
        scenario = scenario_from_resources(fleet.policy, fleet.edge_nodes, fleet.models, fleet.cameras)
        if self.demand is not None:
            scenario = scenario.with_overrides(demand=self.demand)
        first = self.scenario is None
        self.scenario, self.policy_name = scenario, fleet.policy["metadata"]["name"]
        self._new_trace()
        log.info(
            "%s fleet of policy %s/%s: %d edge nodes, %d cameras, %d models; one %g-s slot per %g-s tick",
            "serving the" if first else "the fleet changed; now serving the",
            self.namespace,
            self.policy_name,
            scenario.num_nodes,
            scenario.num_cameras,
            scenario.num_models,
            scenario.slot_seconds,
            self.tick_seconds,
        )

    def _new_trace(self) -> None:
        assert self.scenario is not None
        slots = self.trace_slots or math.ceil(86400 / self.scenario.slot_seconds)
        self.trace = DemandGenerator(self.scenario).episode(self.rng, num_slots=slots)
        self.trace_slot = 0

    def step(self) -> ServedSlot | None:
        """Read the cluster and serve one slot; None while no fleet has been read yet."""
        self.refresh()
        scenario = self.scenario
        if scenario is None:
            return None
        assert self.trace is not None
        if self.trace_slot >= self.trace.num_slots:
            log.info("end of the demand trace: drawing another")
            self._new_trace()
        t = self.trace_slot + 1  # slot 0 of a trace is the simulator's warm-up slot
        self.trace_slot += 1
        expected = self.trace.rates[t]
        counts = self.rng.poisson(expected * self.tick_seconds).astype(float)
        link_quality = self.trace.link_quality[t]
        plan = plan_for(scenario, self.compute, self.bandwidth)
        previous = np.array(
            [[(node, model) in self._previous for model in scenario.model_names] for node in scenario.node_names],
            dtype=float,
        )
        outcome, seconds, hit = serve_slot(scenario, plan, counts, link_quality, previous, self.tick_seconds)
        self._previous = {
            (scenario.node_names[e], scenario.model_names[m]) for e, m in zip(*np.nonzero(plan.cache), strict=True)
        }
        self.slot += 1
        served = ServedSlot(
            slot=self.slot,
            trace_slot=t,
            hour_of_day=float(self.trace.hour_of_day[t]),
            finished_at=0.0,
            scenario=scenario,
            counts=counts,
            expected_rates=expected,
            seconds=seconds,
            hit=hit,
            link_quality=link_quality,
            outcome=outcome,
        )
        self.metrics.add(served, self.tick_seconds)
        served = dataclasses.replace(served, finished_at=time.time())
        with self._history_lock:
            self.history.append(served)
        hour = served.hour_of_day
        log.info(
            "slot %d (%02d:%02d): %d requests, hit rate %.1f %%, mean %.0f ms, cost $%.2e, %d cached",
            self.slot,
            int(hour),
            int(hour % 1 * 60),
            outcome.requests,
            100 * outcome.hit_rate,
            1000 * outcome.mean_response_time_s,
            outcome.cost,
            len(self._previous),
        )
        return served

    def served_slots(self) -> list[ServedSlot]:
        """A copy of :attr:`history`, safe to take while :meth:`run` goes on in another thread."""
        with self._history_lock:
            return list(self.history)

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Step every ``tick_seconds`` until ``stop`` is set or ``duration_s`` has passed.

        A tick that starts late (slow API server) does not make the next ones come faster.
        """
        started = time.monotonic()
        next_tick = started
        while not stop.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                return
            self.step()
            next_tick += self.tick_seconds
            now = time.monotonic()
            next_tick = max(next_tick, now)
            if stop.wait(next_tick - now):
                return


# --- command line -------------------------------------------------------------------------------


def running_cluster(name: str = DEFAULT_NAME) -> ClusterState | None:
    """The local cluster's state if its API server is running."""
    state = ClusterState.load(cluster_dir(name))
    if state is None or not _alive(state.pids.get("apiserver", 0) or 0):
        return None
    return state


def api_client(kubeconfig: Path | None, cluster_name: str = DEFAULT_NAME) -> Any:
    """A Kubernetes API client: ``--kubeconfig``, else ``$KUBECONFIG``, else the running local
    cluster, else ``~/.kube/config``, else the in-cluster service account."""
    from kubernetes import client, config

    if kubeconfig is not None and not Path(kubeconfig).exists():
        raise ConfigException(f"kubeconfig {kubeconfig} does not exist")
    if kubeconfig is None and not os.environ.get("KUBECONFIG"):
        local = running_cluster(cluster_name)
        if local is not None:
            kubeconfig = local.kubeconfig
    try:
        return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    except config.ConfigException:
        if kubeconfig is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise
        config.load_incluster_config()
        return client.ApiClient()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Play the edge gateways of a namespace's fleet: serve the demand of a drifting trace under the "
        "placement the cluster runs (system model of policy/) and export the gateways' metrics. "
        "One tick plays one slot of the policy's interval; request rates stay per real second."
    )
    parser.add_argument(
        "--namespace", "-n", default=DEFAULT_NAMESPACE, help=f"the fleet's namespace (default: {DEFAULT_NAMESPACE})"
    )
    parser.add_argument("--policy", default=None, help="PlacementPolicy name (default: the namespace's only one)")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig (default: $KUBECONFIG, else the running local cluster's, else ~/.kube/config)",
    )
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=DEFAULT_TICK_SECONDS,
        help=f"real seconds per simulated slot (default: {DEFAULT_TICK_SECONDS:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demand trace and request counts (default: 0)")
    parser.add_argument(
        "--trace-slots", type=int, default=None, help="slots per demand trace (default: one simulated day)"
    )
    parser.add_argument(
        "--demand-from",
        default=None,
        metavar="SCENARIO",
        help="take the demand settings (daily profile, drift, bursts) from a scenario: a bundled name "
        "(e.g. traffic-city) or a YAML path (default: the simulator's defaults)",
    )
    parser.add_argument("--address", default="127.0.0.1", help="address of /metrics (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port of /metrics (default: 0, any free port)")
    parser.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"register as Prometheus target (job {JOB}) of a local cluster (default: if one runs Prometheus)",
    )
    parser.add_argument(
        "--cluster-dir",
        type=Path,
        default=None,
        help="the local cluster's directory to register in (default: that of `edgeaigc cluster up`)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: INFO)"
    )


def _registration_dir(args: argparse.Namespace) -> Path | None:
    if args.register is False:
        return None
    if args.cluster_dir is not None:
        return Path(args.cluster_dir)
    state = running_cluster()
    if state is not None and state.prometheus_url is not None and _alive(state.pids.get("prometheus", 0) or 0):
        return state.directory
    if args.register:
        raise prom.PrometheusError("--register: no local cluster with Prometheus is running (give --cluster-dir)")
    return None


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def serve_metrics(metrics: TwinMetrics, address: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """Serve ``metrics`` at ``http://address:port/metrics`` in a thread; return the server and its ``host:port``.

    The text format from :meth:`TwinMetrics.exposition` (not the client library's own server: see there).
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per scrape would drown the twin's log

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="twin-metrics", daemon=True).start()
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    return server, f"{host}:{server.server_port}"


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s twin %(levelname)s %(message)s", force=True)
    # The client's retries would log every attempt while the API server is away; the twin says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        demand = load_scenario(args.demand_from).demand if args.demand_from else None
        twin = Twin(
            KubernetesSource(api_client(args.kubeconfig)),
            args.namespace,
            policy=args.policy,
            seed=args.seed,
            tick_seconds=args.tick_seconds,
            trace_slots=args.trace_slots,
            demand=demand,
        )
        registration = _registration_dir(args)
    except (ValueError, OSError, ConfigException, prom.PrometheusError) as error:
        log.error("%s", error)
        return 2
    server, address = serve_metrics(twin.metrics, args.address, args.port)
    log.info("metrics at http://%s/metrics", address)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if registration is not None:
            prom.register_target(registration, JOB, address, {"namespace": args.namespace})
            log.info("registered as Prometheus target (job %s) in %s", JOB, registration)
        twin.run(stop, args.duration)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        if registration is not None:
            prom.unregister_target(registration, JOB, address)
        server.shutdown()
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.cluster.twin``, the same as ``edgeaigc twin``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("twin", argv)


if __name__ == "__main__":
    raise SystemExit(main())
