"""Sim-to-real: what the system model predicts for the placements and shares the real system ran.

During ``edgeaigc demo --real`` (and ``edgeaigc bench-sim-to-real``) the running system is
sampled once per decision interval: which models the Pi caches, the CPU limit of each edge
replica, the routing table's bandwidth shares and uplink, the bytes the gateway accepted from each
camera, and, per model and where it was served (edge or cloud), the requests the real gateway
answered over the interval and their mean latency (Prometheus, the gateway's own histogram).
Here each sample is put through the system model (:func:`~edgeaigc.policy.system_model.node_serving`)
with the fleet the operator planned from — the same cache, the CPU limits, the observed request
rates — and its predicted service time compared with the observed one.

Two things of the real system the slot model does not have are modelled here:

- the replicas' CPU limits are CFS quotas, not slower cores (:mod:`edgeaigc.policy.cfs`): a request that
  finds the quota unused runs at full speed, one needing more than a period's quota is rounded up to
  periods; the cloud replica is such a pod too (``Bed.cloud_limit_cores``);
- the gateway's latency starts before its uplink pacing (:mod:`edgeaigc.policy.uplink_pacing`): a camera
  over its bandwidth share waits up to a second for it, then is refused and comes back, and that wait is
  part of what the gateway measures, wherever the request is served next. The camera's upload to the
  gateway itself is on loopback and costs nothing, so the system model's upload term is left out.

Points: one per (model, served by, CPU limit) over all samples, weighted by requests; ``error`` is
(predicted - observed) / observed of the mean. Where the run read the replicas themselves
(:mod:`.replica_metrics`), a point also has the p95 (the replicas' histogram plus the gateway's part of the
mean, against the per-request times of :func:`~edgeaigc.policy.cfs.response_samples` over the measured
per-frame work, both read through the same buckets: :mod:`.histogram`) and the CPU seconds per request (the
containers' CPU time against the model's work); :class:`Overall` puts all requests together, with the hit
rate. ``docs/calibration.md`` ("p95 and CPU seconds per request") says what each includes.

``edgeaigc bench-sim-to-real`` is ``edgeaigc demo --real`` with longer phases, run for the figures:
the table is printed, ``sim-to-real.png`` and ``summary.json`` are written to ``--output-dir``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.cluster.histogram import bucket_counts, histogram_quantile
from edgeaigc.cluster.replica_metrics import ReplicaInterval, merge
from edgeaigc.inference.metrics_contract import REQUEST_LATENCY_BUCKETS
from edgeaigc.policy import cfs, uplink_pacing
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.system_model import node_serving


@dataclasses.dataclass
class Sample:
    """One decision interval of the real system."""

    at: float
    seconds: float
    cached: list[str]
    cpu_millicores: dict[str, int]
    """Model -> CPU limit of its (ready) edge replica."""
    served: dict[str, dict[str, tuple[float, float]]]
    """Model -> served_by -> (requests, mean latency in seconds) at the gateway over the interval."""
    bandwidth_share: dict[str, float] = dataclasses.field(default_factory=dict)
    """Camera -> its bandwidth share in the routing table the gateway held (empty: not sampled)."""
    uplink_bytes_per_second: float | None = None
    """The node's uplink the gateway divides among the cameras (the table's ``uplinkBytesPerSecond``)."""
    camera_bytes: dict[str, float] = dataclasses.field(default_factory=dict)
    """Camera -> request bytes the gateway accepted from it over the interval."""
    camera_rate: dict[str, float] = dataclasses.field(default_factory=dict)
    """Camera -> the mean upload rate (bytes/s) the gateway reported for it over the interval (a check on
    ``generations``: the gauge keeps its last value while the camera is silent, so it is not predicted from)."""
    generations: tuple[int, int] | None = None
    """Generations of (the operator's routing table, the oldest table the gateway held over the interval): the
    gateway reads the table from a ConfigMap volume, which the kubelet updates up to a minute later."""
    replicas: dict[str, dict[str, ReplicaInterval]] = dataclasses.field(default_factory=dict)
    """Model -> place -> what its replicas did over the interval, read from them (:mod:`.replica_metrics`): their
    own request-duration histogram and their containers' CPU time (empty: not sampled, e.g. an older run)."""
    gateway_buckets: list[float] | None = None
    """The gateway's request-duration histogram over the interval, all models and places (cumulative counts at
    ``REQUEST_LATENCY_BUCKETS``, then +Inf; None: not sampled)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Point:
    """Predicted against observed mean service time of one (model, served by, CPU limit)."""

    model: str
    served_by: str
    cpu_millicores: int | None
    requests: float
    observed_ms: float
    predicted_ms: float
    observed_p95_ms: float | None = None
    """The replicas' own p95 (their histogram) plus the gateway's part of the mean (see :func:`compare`)."""
    predicted_p95_ms: float | None = None
    """The p95 of the predicted per-request times, read through the same histogram."""
    observed_cpu_ms: float | None = None
    """The replicas' container CPU time per request they answered, in milliseconds (of CPU)."""
    predicted_cpu_ms: float | None = None
    """The model's work per request: what the system model charges a core for it."""

    @property
    def error(self) -> float:
        return _error(self.predicted_ms, self.observed_ms)

    @property
    def p95_error(self) -> float:
        return _error(self.predicted_p95_ms, self.observed_p95_ms)

    @property
    def cpu_error(self) -> float:
        return _error(self.predicted_cpu_ms, self.observed_cpu_ms)


@dataclasses.dataclass
class Overall:
    """All requests of a phase together: predicted against observed hit rate, mean, p95 and CPU per request."""

    requests: float
    observed_hit_rate: float | None
    predicted_hit_rate: float | None
    """The share of requests for models the plan cached: the system model has a cached model serve at once."""
    observed_ms: float | None
    predicted_ms: float | None
    observed_p95_ms: float | None
    """The gateway's own histogram, all models and places."""
    predicted_p95_ms: float | None
    observed_cpu_ms: float | None
    predicted_cpu_ms: float | None


def _error(predicted: float | None, observed: float | None) -> float:
    if predicted is None or observed is None or not observed:
        return float("nan")
    return (predicted - observed) / observed


def _scenario(documents: Sequence[dict[str, Any]]) -> Any:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for document in documents:
        by_kind[document["kind"]].append(document)
    (policy,) = by_kind["PlacementPolicy"]
    return scenario_from_resources(policy, by_kind["EdgeNode"], by_kind["InferenceModel"], by_kind["Camera"])


@dataclasses.dataclass(frozen=True)
class Bed:
    """What the real system adds to the fleet for the prediction: which camera sends which models (their
    bytes share its bucket at the gateway) and the cloud replicas' CPU limit."""

    camera_models: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Camera -> the models it sends one request each per frame, in order (empty: no uplink pacing)."""
    cloud_limit_cores: float | None = None
    """The CPU limit of a cloud replica (None: the fleet's ``cloud.coreSpeed``, which the demo sets to it)."""
    routing_tables: dict[int, tuple[dict[str, float], float]] = dataclasses.field(default_factory=dict)
    """Generation -> (the cameras' shares, the uplink) of each routing table the operator wrote during the run
    (:func:`routing_tables`): the gateway may hold one from an earlier phase."""
    work_samples_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    """Model -> each measured inference's milliseconds on real frames (their median is the fleet's ``workMs``):
    the per-frame work the p95 is predicted from (empty: no p95 predicted)."""


def routing_tables(phases: dict[str, list[Sample]]) -> dict[int, tuple[dict[str, float], float]]:
    """The operator's routing tables (shares, uplink) by generation, as the samples of all phases saw them."""
    return {
        sample.generations[0]: (sample.bandwidth_share, sample.uplink_bytes_per_second)
        for samples in phases.values()
        for sample in samples
        if sample.generations is not None and sample.uplink_bytes_per_second is not None
    }


def predict(
    documents: Sequence[dict[str, Any]], sample: Sample, bed: Bed | None = None
) -> dict[tuple[str, str], float]:
    """(model, served_by) -> the system model's service time (s) for the sample's cache, shares and rates."""
    return _predict(_scenario(documents), sample, bed or Bed(), GatewayState())


def _rate(sample: Sample, model: str, served_by: str | None = None) -> float:
    places = sample.served.get(model, {})
    requests = sum(n for where, (n, _) in places.items() if served_by is None or where == served_by)
    return requests / max(sample.seconds, 1.0)


@dataclasses.dataclass
class Prediction:
    """One sample's prediction per (model, place)."""

    means: dict[tuple[str, str], float]
    """The mean service time at the gateway (s)."""
    spread: dict[tuple[str, str], list[float]]
    """Per-request times (s): the mean's CFS term replaced by each (per-frame work, arrival phase)'s
    (:func:`~edgeaigc.policy.cfs.response_samples`); empty without the bed's work samples."""
    cpu_seconds: dict[tuple[str, str], float]
    """CPU seconds per request: the model's work at the core that serves it."""


def _cfs_terms(scenario: Any, sample: Sample, bed: Bed) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(model, place) -> (work at a whole core in s, CPU limit in cores, request rate) of the replica that serves
    it: the edge replica under its limit where one is running, the cloud replica under its own."""
    names = list(scenario.model_names)
    cloud_limit = bed.cloud_limit_cores or float(scenario.cloud_core_speed)
    terms = {}
    for m, name in enumerate(names):
        work = float(scenario.model_work_s[m])
        if name in sample.cpu_millicores:
            edge_work = work / float(scenario.node_core_speed[0])
            terms[(name, "edge")] = (edge_work, sample.cpu_millicores[name] / 1000.0, _rate(sample, name, "edge"))
        terms[(name, "cloud")] = (work, cloud_limit, _rate(sample, name, "cloud"))
    return terms


def _predict_with_spread(scenario: Any, sample: Sample, bed: Bed, gateway: GatewayState) -> Prediction:
    """One sample's means (:func:`_predict`), with each (model, place)'s per-request spread and CPU."""
    means = _predict(scenario, sample, bed, gateway)
    spread, cpu = {}, {}
    names = list(scenario.model_names)
    for (name, place), (work, limit, rate) in _cfs_terms(scenario, sample, bed).items():
        cpu[(name, place)] = work
        samples_ms = bed.work_samples_ms.get(name)
        if not samples_ms:
            continue
        reference = float(scenario.model_work_s[names.index(name)])  # the samples are at the reference core
        scale = work / reference if reference > 0 else 1.0
        times = cfs.response_samples([ms / 1000.0 * scale for ms in samples_ms], limit, rate)
        rest = means[(name, place)] - cfs.response_seconds(work, limit, rate)  # overhead, transfer, pacing wait
        spread[(name, place)] = [rest + t for t in times]
    return Prediction(means, spread, cpu)


def _predict(scenario: Any, sample: Sample, bed: Bed, gateway: GatewayState) -> dict[tuple[str, str], float]:
    """One sample's prediction; ``gateway`` carries the uplink from one sample to the next."""
    names = list(scenario.model_names)
    node_cores = float(scenario.node_cores[0])
    cache = np.zeros((1, len(names)))
    shares = np.zeros((1, len(names)))
    rates = np.zeros((1, len(names)))
    for m, name in enumerate(names):
        if name in sample.cached and name in sample.cpu_millicores:
            cache[0, m] = 1.0
            shares[0, m] = sample.cpu_millicores[name] / 1000.0 / node_cores
        rates[0, m] = _rate(sample, name)
    serving = node_serving(scenario, cache, rates, shares)
    cloud_limit = bed.cloud_limit_cores or float(scenario.cloud_core_speed)
    overhead = scenario.request_overhead_s
    predicted = {}
    for m, name in enumerate(names):
        work = float(scenario.model_work_s[m])
        # The replicas are CFS quotas, not slower cores: a request that finds the quota unused runs at full
        # speed (policy/cfs.py); the rest of the system model's terms (backhaul, round trip) stay.
        if name in sample.cpu_millicores:
            limit = sample.cpu_millicores[name] / 1000.0
            edge_work = work / float(scenario.node_core_speed[0])
            predicted[(name, "edge")] = overhead + cfs.response_seconds(edge_work, limit, _rate(sample, name, "edge"))
        else:
            predicted[(name, "edge")] = float(serving.hit_seconds[0, m])
        cloud_compute = cfs.response_seconds(work, cloud_limit, _rate(sample, name, "cloud"))
        fluid = work / float(scenario.cloud_core_speed)
        predicted[(name, "cloud")] = float(serving.miss_seconds[0, m]) - fluid + cloud_compute
    _add_uplink_waits(scenario, sample, bed, gateway, predicted)
    return predicted


@dataclasses.dataclass
class GatewayState:
    """What the gateway's uplink carries from one sample to the next: each camera's token bucket."""

    buckets: dict[str, uplink_pacing.Bucket] = dataclasses.field(default_factory=dict)


def enforced_uplink(sample: Sample, bed: Bed) -> tuple[dict[str, float], float | None]:
    """The shares and uplink the gateway enforced over ``sample``: those of the oldest routing table it held
    then (its ConfigMap volume brings the operator's tables late), else the operator's latest."""
    if sample.generations is not None:
        held = bed.routing_tables.get(sample.generations[1])
        if held is not None:
            return held
    return sample.bandwidth_share, sample.uplink_bytes_per_second


def _add_uplink_waits(
    scenario: Any,
    sample: Sample,
    bed: Bed,
    gateway: GatewayState,
    predicted: dict[tuple[str, str], float],
) -> None:
    """The wait of each camera's requests for its bandwidth share at the gateway, added to both places (the
    gateway's latency includes it, wherever the request goes next)."""
    shares, uplink = enforced_uplink(sample, bed)
    if not bed.camera_models or uplink is None or not shares:
        return
    names = list(scenario.model_names)
    active = [camera for camera, sent in sample.camera_bytes.items() if sent > 0]
    for u, camera in enumerate(scenario.camera_names):
        models = [name for name in bed.camera_models.get(camera, []) if name in names]
        if not models or camera not in active:
            gateway.buckets.pop(camera, None)  # silent: its bucket fills up
            continue
        sizes = [float(scenario.model_input_mbit[names.index(name)]) * 1e6 / 8 for name in models]
        where = ["edge" if name in sample.cpu_millicores else "cloud" for name in models]
        service = [predicted[(name, place)] for name, place in zip(models, where, strict=True)]
        frames = max(1, round(sample.camera_bytes[camera] / sum(sizes)))
        fps = float(scenario.camera_fps[u])
        # a camera that was silent before started during the interval: its frames are its last ones
        start_s = 0.0 if camera in gateway.buckets else max(0.0, sample.seconds - frames / fps)
        pacing = uplink_pacing.pace(
            sizes,
            service,
            fps,
            uplink_pacing.camera_rate(camera, shares, active, uplink),
            sample.seconds,
            gateway.buckets.setdefault(camera, uplink_pacing.Bucket()),
            max_frames=frames,
            start_s=start_s,
        )
        for name, wait in zip(models, pacing.waits_s, strict=True):
            predicted[(name, "edge")] += wait
            predicted[(name, "cloud")] += wait


def _predictions(
    documents: Sequence[dict[str, Any]], samples: Sequence[Sample], bed: Bed
) -> list[dict[tuple[str, str], float]]:
    """Each sample's prediction, in order (the gateway's uplink carries over from one to the next)."""
    scenario = _scenario(documents)  # once: the fleet is the same for every sample
    gateway = GatewayState()
    return [_predict(scenario, sample, bed, gateway) for sample in samples]


def _predictions_with_spread(
    documents: Sequence[dict[str, Any]], samples: Sequence[Sample], bed: Bed
) -> list[Prediction]:
    """:func:`_predictions` with each sample's per-request spread and CPU per request."""
    scenario = _scenario(documents)
    gateway = GatewayState()
    return [_predict_with_spread(scenario, sample, bed, gateway) for sample in samples]


#: The buckets of every request-duration histogram (the gateway's and the model servers').
BOUNDS = [*REQUEST_LATENCY_BUCKETS, float("inf")]
P95 = 0.95


def _pooled_quantile(spreads: Sequence[tuple[list[float], float]], shift_s: float = 0.0) -> float | None:
    """The p95 (s) of per-request times pooled over samples, each sample's weighing its requests, read through
    the histogram's buckets after taking ``shift_s`` off (and adding it back)."""
    values = [value - shift_s for times, _ in spreads for value in times]
    weights = [requests / len(times) for times, requests in spreads for _ in times]
    if not values or sum(weights) <= 0:
        return None
    quantile = histogram_quantile(P95, BOUNDS, bucket_counts(values, weights, BOUNDS))
    return None if quantile is None else quantile + shift_s


@dataclasses.dataclass
class _Row:
    """What :func:`compare` adds up for one (model, place, CPU limit)."""

    requests: float = 0.0
    observed_s: float = 0.0
    predicted_s: float = 0.0
    replicas: list[ReplicaInterval] = dataclasses.field(default_factory=list)
    spread: list[tuple[list[float], float]] = dataclasses.field(default_factory=list)
    cpu_predicted_s: float = 0.0
    """Predicted CPU seconds times the requests the replicas counted (with their CPU read)."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def _point(key: tuple[str, str, int | None], row: _Row) -> Point:
    """A row's figures. The replicas' histogram has no gateway part (the relay, the gateway's parsing, the uplink
    pacing): the observed p95 is theirs plus the gateway's part of the mean (the gateway's mean less theirs),
    taken as the same for every request; the predicted times lose and regain that part around the buckets."""
    model, served_by, limit = key
    n = row.requests
    replica = merge(row.replicas)
    observed_p95 = predicted_p95 = observed_cpu = predicted_cpu = None
    if replica.requests > 0:
        shift = row.observed_s / n - replica.seconds / replica.requests
        quantile = histogram_quantile(P95, BOUNDS, replica.buckets)
        observed_p95 = None if quantile is None else quantile + shift
        predicted_p95 = _pooled_quantile(row.spread, shift)
    with_cpu = [r for r in row.replicas if r.cpu_seconds is not None]
    counted = sum(r.requests for r in with_cpu)
    if counted > 0:
        observed_cpu = sum(r.cpu_seconds or 0.0 for r in with_cpu) / counted
        predicted_cpu = row.cpu_predicted_s / counted
    return Point(
        model,
        served_by,
        limit,
        round(n, 1),
        round(1000 * row.observed_s / n, 1),
        round(1000 * row.predicted_s / n, 1),
        _ms(observed_p95),
        _ms(predicted_p95),
        _ms(observed_cpu),
        _ms(predicted_cpu),
    )


def compare(documents: Sequence[dict[str, Any]], samples: Sequence[Sample], bed: Bed | None = None) -> list[Point]:
    """Request-weighted means over the samples, one :class:`Point` per (model, served_by, CPU limit)."""
    return compare_with_overall(documents, samples, bed)[0]


def compare_with_overall(
    documents: Sequence[dict[str, Any]], samples: Sequence[Sample], bed: Bed | None = None
) -> tuple[list[Point], Overall]:
    """:func:`compare`'s points, and all requests together (:class:`Overall`)."""
    rows: dict[tuple[str, str, int | None], _Row] = defaultdict(_Row)
    everything: list[tuple[list[float], float]] = []
    requests = edge = cached = 0.0
    for sample, predicted in zip(samples, _predictions_with_spread(documents, samples, bed or Bed()), strict=True):
        for model, places in sample.served.items():
            for served_by, (count, mean_s) in places.items():
                requests += count
                edge += count if served_by == "edge" else 0.0
                cached += count if model in sample.cached else 0.0
                key = (model, served_by)
                if count <= 0 or key not in predicted.means:
                    continue
                limit = sample.cpu_millicores.get(model) if served_by == "edge" else None
                if served_by == "edge" and limit is None:
                    continue  # served by a replica that was starting or going: its CPU is not known
                row = rows[(model, served_by, limit)]
                row.requests += count
                row.observed_s += count * mean_s
                row.predicted_s += count * predicted.means[key]
                if key in predicted.spread:
                    row.spread.append((predicted.spread[key], count))
                    everything.append((predicted.spread[key], count))
                replica = sample.replicas.get(model, {}).get(served_by)
                if replica is not None:
                    row.replicas.append(replica)
                    if replica.cpu_seconds is not None:
                        row.cpu_predicted_s += replica.requests * predicted.cpu_seconds[key]
    points = [
        _point(key, row)
        for key, row in sorted(rows.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or 0))
        if row.requests > 0
    ]
    return points, _overall(points, samples, everything, requests, edge, cached)


def _overall(
    points: Sequence[Point],
    samples: Sequence[Sample],
    spread: Sequence[tuple[list[float], float]],
    requests: float,
    edge: float,
    cached: float,
) -> Overall:
    n = sum(p.requests for p in points)
    gateway = [sample.gateway_buckets for sample in samples if sample.gateway_buckets]
    observed_p95 = (
        histogram_quantile(P95, BOUNDS, [sum(column) for column in zip(*gateway, strict=True)]) if gateway else None
    )
    with_cpu = [p for p in points if p.observed_cpu_ms is not None and p.predicted_cpu_ms is not None]
    cpu_n = sum(p.requests for p in with_cpu)
    return Overall(
        round(requests, 1),
        round(edge / requests, 4) if requests else None,
        round(cached / requests, 4) if requests else None,
        round(sum(p.requests * p.observed_ms for p in points) / n, 1) if n else None,
        round(sum(p.requests * p.predicted_ms for p in points) / n, 1) if n else None,
        _ms(observed_p95),
        _ms(_pooled_quantile(spread)) if gateway else None,
        round(sum(p.requests * (p.observed_cpu_ms or 0.0) for p in with_cpu) / cpu_n, 1) if cpu_n else None,
        round(sum(p.requests * (p.predicted_cpu_ms or 0.0) for p in with_cpu) / cpu_n, 1) if cpu_n else None,
    )


def with_overhead(documents: Sequence[dict[str, Any]], overhead_ms: float) -> list[dict[str, Any]]:
    """The fleet with the PlacementPolicy's ``requestOverheadMs`` set to ``overhead_ms``."""
    copied = copy.deepcopy(list(documents))
    for document in copied:
        if document["kind"] == "PlacementPolicy":
            document["spec"]["requestOverheadMs"] = round(overhead_ms, 2)
    return copied


def fit_overhead_ms(documents: Sequence[dict[str, Any]], samples: Sequence[Sample], bed: Bed | None = None) -> float:
    """The per-request overhead that best explains ``samples``: the request-weighted median of observed minus
    predicted (without overhead) mean service time. Fitted on one phase, judged on another."""
    residuals: list[tuple[float, float]] = []
    for sample, predicted in zip(
        samples, _predictions(with_overhead(documents, 0.0), samples, bed or Bed()), strict=True
    ):
        for model, places in sample.served.items():
            for served_by, (requests, mean_s) in places.items():
                known = served_by == "cloud" or sample.cpu_millicores.get(model) is not None
                if requests > 0 and known and (model, served_by) in predicted:
                    residuals.append((mean_s - predicted[(model, served_by)], requests))
    if not residuals:
        return 0.0
    residuals.sort()
    total, running = sum(weight for _, weight in residuals), 0.0
    for value, weight in residuals:
        running += weight
        if running >= total / 2:
            return max(0.0, 1000 * value)
    return max(0.0, 1000 * residuals[-1][0])


def _cell(value: float | None, unit: str = "ms", width: int = 8) -> str:
    return f"{'—':>{width + len(unit)}}" if value is None else f"{value:>{width}.1f}{unit}"


def _error_cell(error: float) -> str:
    return f"{'—':>7}" if error != error else f"{error:>+7.0%}"  # NaN: nothing to compare


def format_table(points: Sequence[Point], overall: Overall | None = None) -> str:
    """Per (model, place, CPU limit): requests, then mean, p95 and CPU per request, each observed, predicted and
    the error; ``overall``: a last line for all requests, with the hit rate. "—": not measured (an older run)."""
    header = (
        f"{'model':<16} {'served by':<9} {'CPU limit':>9} {'requests':>9} "
        f"{'mean obs':>10} {'pred':>10} {'error':>7} {'p95 obs':>10} {'pred':>10} {'error':>7} "
        f"{'CPU/req obs':>11} {'pred':>10} {'error':>7}"
    )
    lines = [header]
    for p in points:
        limit = f"{p.cpu_millicores}m" if p.cpu_millicores else "-"
        lines.append(
            f"{p.model:<16} {p.served_by:<9} {limit:>9} {p.requests:>9.0f} "
            f"{_cell(p.observed_ms)} {_cell(p.predicted_ms)} {_error_cell(p.error)} "
            f"{_cell(p.observed_p95_ms)} {_cell(p.predicted_p95_ms)} {_error_cell(p.p95_error)} "
            f"{_cell(p.observed_cpu_ms, 'ms', 9)} {_cell(p.predicted_cpu_ms)} {_error_cell(p.cpu_error)}"
        )
    if overall is not None:

        def rate(value: float | None) -> str:
            return "—" if value is None else f"{value:.0%}"

        hit = f"hit {rate(overall.observed_hit_rate)}/{rate(overall.predicted_hit_rate)}"
        lines.append(
            f"{'all requests':<16} {hit:<19} {overall.requests:>9.0f} "
            f"{_cell(overall.observed_ms)} {_cell(overall.predicted_ms)} "
            f"{_error_cell(_error(overall.predicted_ms, overall.observed_ms))} "
            f"{_cell(overall.observed_p95_ms)} {_cell(overall.predicted_p95_ms)} "
            f"{_error_cell(_error(overall.predicted_p95_ms, overall.observed_p95_ms))} "
            f"{_cell(overall.observed_cpu_ms, 'ms', 9)} {_cell(overall.predicted_cpu_ms)} "
            f"{_error_cell(_error(overall.predicted_cpu_ms, overall.observed_cpu_ms))}"
        )
    return "\n".join(lines)


def _scatter(axis: Any, points: Sequence[Point], pairs: list[tuple[float, float] | None], label: str) -> None:
    """Predicted against observed on ``axis``, log-log, one point per (model, served by, CPU limit) that has a
    pair, the ±20 % band."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    chosen = [(p, pair) for p, pair in zip(points, pairs, strict=True) if pair is not None and min(pair) > 0]
    values = [v for _, pair in chosen for v in pair]
    if not values:
        axis.set_axis_off()
        return
    low, high = min(values) / 1.5, max(values) * 1.5
    line = np.geomspace(low, high, 50)
    axis.plot(line, line, color="black", linewidth=1, label="predicted = observed")
    axis.fill_between(line, line * 0.8, line * 1.2, color="grey", alpha=0.2, label="±20 %")
    markers = {"edge": "o", "cloud": "s"}
    colours = {model: f"C{index}" for index, model in enumerate(sorted({p.model for p in points}))}
    for model in sorted({p.model for p, _ in chosen}):
        for served_by, marker in markers.items():
            mine = [(p, pair) for p, pair in chosen if p.model == model and p.served_by == served_by]
            if mine:
                axis.scatter(
                    [pair[0] for _, pair in mine],
                    [pair[1] for _, pair in mine],
                    marker=marker,
                    color=colours[model],
                    s=[20 + min(p.requests, 400) / 4 for p, _ in mine],
                    label=f"{model} ({served_by})",
                )
                for p, pair in mine:
                    if p.cpu_millicores:
                        axis.annotate(f"{p.cpu_millicores}m", pair, fontsize=7)
    axis.set_xscale("log")
    axis.set_yscale("log")
    for scale in (axis.xaxis, axis.yaxis):  # plain milliseconds on the decades, none on the minor ticks
        scale.set_major_formatter(ScalarFormatter())
        scale.set_minor_formatter(NullFormatter())
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_xlabel(f"observed {label} at the gateway (ms)")
    axis.set_ylabel("system model's prediction (ms)")
    axis.legend(fontsize=7, loc="upper left")


def plot(points: Sequence[Point], path: Path, title: str) -> None:
    """Predicted against observed mean service time and, where the run measured it, p95: a panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(v > 0 for p in points for v in (p.observed_ms, p.predicted_ms)):
        return
    p95 = [
        (p.observed_p95_ms, p.predicted_p95_ms)
        if p.observed_p95_ms is not None and p.predicted_p95_ms is not None
        else None
        for p in points
    ]
    panels = 2 if any(pair is not None for pair in p95) else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 6), squeeze=False)
    _scatter(axes[0][0], points, [(p.observed_ms, p.predicted_ms) for p in points], "mean service time")
    if panels == 2:
        _scatter(axes[0][1], points, list(p95), "p95 service time")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@dataclasses.dataclass
class Report:
    """Sim-to-real of a run: as planned (the overhead measured before the phases), and calibrated (the
    overhead fitted on the first phase, judged on the second)."""

    planned_overhead_ms: float
    as_planned: dict[str, list[Point]]
    """Phase -> its points with the fleet as the operator planned from it."""
    fitted_overhead_ms: float
    calibrated: list[Point]
    """The last phase's points with the overhead fitted on the first phase."""
    as_planned_overall: dict[str, Overall] = dataclasses.field(default_factory=dict)
    """Phase -> all its requests together, as planned."""
    calibrated_overall: Overall | None = None

    def to_dict(self) -> dict[str, Any]:
        def rows(points: Sequence[Point]) -> list[dict[str, Any]]:
            return [
                dataclasses.asdict(p) | {"error": p.error, "p95_error": p.p95_error, "cpu_error": p.cpu_error}
                for p in points
            ]

        return {
            "planned_overhead_ms": self.planned_overhead_ms,
            "as_planned": {phase: rows(points) for phase, points in self.as_planned.items()},
            "as_planned_overall": {phase: dataclasses.asdict(o) for phase, o in self.as_planned_overall.items()},
            "fitted_overhead_ms": round(self.fitted_overhead_ms, 2),
            "calibrated": rows(self.calibrated),
            "calibrated_overall": self.calibrated_overall and dataclasses.asdict(self.calibrated_overall),
        }


def report(documents: Sequence[dict[str, Any]], phases: dict[str, list[Sample]], bed: Bed | None = None) -> Report:
    names = list(phases)
    planned = next(
        (float(d["spec"].get("requestOverheadMs", 0.0)) for d in documents if d["kind"] == "PlacementPolicy"), 0.0
    )
    as_planned = {phase: compare_with_overall(documents, samples, bed) for phase, samples in phases.items()}
    fitted = fit_overhead_ms(documents, phases[names[0]], bed) if names else 0.0
    calibrated, calibrated_overall = (
        compare_with_overall(with_overhead(documents, fitted), phases[names[-1]], bed) if len(names) > 1 else ([], None)
    )
    return Report(
        planned,
        {phase: points for phase, (points, _) in as_planned.items()},
        fitted,
        calibrated,
        {phase: overall for phase, (_, overall) in as_planned.items()},
        calibrated_overall,
    )


def print_report(result: Report, load: str) -> None:
    for phase, points in result.as_planned.items():
        print(f"\nsim-to-real, {phase} phase, as planned (overhead {result.planned_overhead_ms:g} ms; {load})")
        print(format_table(points, result.as_planned_overall.get(phase)))
    if result.calibrated:
        first, *_, last = list(result.as_planned)
        print(f"\nsim-to-real, {last} phase, overhead fitted on the {first} phase: {result.fitted_overhead_ms:.1f} ms")
        print(format_table(result.calibrated, result.calibrated_overall))


def load_run(directory: Path) -> tuple[list[dict[str, Any]], dict[str, list[Sample]], str, Bed]:
    """The fleet, each phase's samples, the load and the bed of a ``demo --real`` output directory."""
    import yaml

    documents = [d for d in yaml.safe_load_all((directory / "fleet.yaml").read_text()) if d]
    summary = json.loads((directory / "summary.json").read_text())
    phases = {
        phase["algorithm"]: [
            Sample(
                s["at"],
                s["seconds"],
                s["cached"],
                s["cpu_millicores"],
                {m: {k: (v[0], v[1]) for k, v in places.items()} for m, places in s["served"].items()},
                s.get("bandwidth_share", {}),
                s.get("uplink_bytes_per_second"),
                s.get("camera_bytes", {}),
                s.get("camera_rate", {}),
                tuple(s["generations"]) if s.get("generations") else None,
                {
                    m: {place: ReplicaInterval(**figures) for place, figures in places.items()}
                    for m, places in s.get("replicas", {}).items()
                },
                s.get("gateway_buckets"),
            )
            for s in phase.get("samples", [])
        ]
        for phase in summary["phases"]
    }
    bed = Bed(
        summary.get("camera_models", {}),
        summary.get("cloud_replica_cores"),
        routing_tables(phases),
        summary.get("work_samples_ms", {}),
    )
    return documents, phases, str(summary.get("load", "")), bed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``edgeaigc bench-sim-to-real``: the flags of ``demo --real``, with defaults for measuring."""
    from edgeaigc.cluster import demo

    demo.add_arguments(parser)
    parser.add_argument(
        "--from-run",
        type=Path,
        default=None,
        metavar="DIR",
        help="no new run: the tables and plot of a finished run's output directory (its fleet.yaml, summary.json)",
    )
    parser.set_defaults(real=True, minutes=5.0, interval=15, output_dir=Path("sim-to-real"))


def run(args: argparse.Namespace) -> int:
    from edgeaigc.cluster import demo

    if args.from_run is not None:
        try:
            documents, phases, load, bed = load_run(args.from_run)
        except (OSError, ValueError, KeyError) as error:
            print(f"edgeaigc bench-sim-to-real: {args.from_run} is not a demo --real output: {error}")
            return 2
        result = report(documents, phases, bed)
        print_report(result, load)
        if result.calibrated:  # the judged table: the overhead fitted on the first phase, the last phase's points
            first, *_, last = list(result.as_planned)
            title = f"{last} phase, overhead fitted on {first} ({result.fitted_overhead_ms:.1f} ms; {load})"
            plot(result.calibrated, args.from_run / "sim-to-real.png", title)
        else:
            points = [p for points in result.as_planned.values() for p in points]
            plot(points, args.from_run / "sim-to-real.png", f"predicted vs observed ({load})")
        return 0
    args.real = True
    return demo.run(args)
