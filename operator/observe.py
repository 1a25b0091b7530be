"""Observe: every read of one decision, from the API server and Prometheus, in a :class:`Snapshot`.

:func:`observe` reads the fleet (EdgeNodes, InferenceModels, Cameras), what the operator created
for the policy (Deployments, Services, the routing ConfigMap) and its model pods, the nodes'
allocatable resources (all from the watch-based caches of :mod:`.object_cache` while they are
synced, else listed) and the actor ConfigMap, and runs the Prometheus queries; it interprets
nothing. :func:`~edgeaigc.operator.decide.decide` turns the snapshot into a decision.

The queries follow ``docs/metrics-contract.md``: the gateways count requests per (edge node,
model) and request bytes per camera, never per (camera, model), so Prometheus holds O(nodes x
models + cameras) series; the operator sends the same :data:`QUERIES_PER_READ` queries each
interval whatever the fleet's size, one per figure, each returning every series at once. The
results become the policy's observation (DESIGN §3, observation contract): per (camera, model)
request rate over the last interval and its mean over the last
:data:`~edgeaigc.policy.observation.TREND_WINDOW_SLOTS` intervals, each camera's link quality,
node compute use, the current placement and the clock (:func:`observation_from_samples`, pure,
tested on hand-made query results). A camera's rate of a model is its node's rate of the model
times the camera's share of the node's request bytes (:func:`camera_rates_of`): exact for every
feature the encoder reads (node rates, each camera's upload).
:class:`PrometheusObserver` runs the queries and classifies failures so the decision can keep
the last good placement and say why.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from edgeaigc.inference.metrics_contract import (
    CAMERA_LINK_SPECTRAL_EFFICIENCY,
    CAMERA_REQUEST_BYTES_TOTAL,
    RECORDED_REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUESTS_TOTAL,
)
from edgeaigc.operator import constants as c
from edgeaigc.operator.demand_history import DemandHistory, EarlierWindows, Sample
from edgeaigc.operator.object_cache import ObjectCache, ObjectCaches
from edgeaigc.operator.reconcile import MANAGED_KINDS, RetryPolicy, with_retries
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.observation import TREND_WINDOW_SLOTS, Observation
from edgeaigc.policy.registry import PolicyUnavailable
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import node_rates_of

Resource = dict[str, Any]


class ObservationError(RuntimeError):
    """Prometheus could not give an observation; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


CLOUD = 'served_by="cloud"'


def series(name: str, selector: str = "", *matchers: str) -> str:
    """A PromQL series selector: ``name`` with ``matchers`` and the policy's ``spec.prometheusSelector``."""
    inside = ", ".join(part for part in (*matchers, selector.strip().strip(",")) if part)
    return f"{name}{{{inside}}}" if inside else name


def requests_query(
    window_s: int, selector: str = "", by: str = "edge_node, model, served_by", recorded: bool = True
) -> str:
    """Requests of every (edge node, model, place) over the last ``window_s``.

    From the recording rule of ``charts/edgeaigc/files/prometheus-rules.yaml`` (the gateways' counters
    without ``code``), or, with ``recorded=False``, from the gateways' counters themselves (a
    Prometheus without the rules). Gateways only: the model servers have no ``edge_node`` label.

    Only the pairs that counted a request (``> 0``): at 1000 nodes x 50 models about one pair in ten
    did in an interval, and the other 90 000 zeros made the answer 11 MB, which the operator took
    0.5-0.8 s to parse. Whether the series exist at all is then asked apart
    (:func:`request_series_query`), only when no pair counted anything.
    """
    return f"sum by ({by}) (increase({_request_counter(selector, recorded)}[{window_s}s])) > 0"


def _request_counter(selector: str, recorded: bool) -> str:
    return series(RECORDED_REQUESTS_TOTAL, selector) if recorded else series(REQUESTS_TOTAL, selector, 'edge_node!=""')


def request_series_query(selector: str = "") -> str:
    """Whether the request series exist, from the recording rule (``source="recorded"``) and the gateways'
    counters (``source="raw"``): one sample each that has series, none otherwise."""
    return " or ".join(
        f'label_replace(count({_request_counter(selector, recorded)}), "source", "{source}", "", "")'
        for recorded, source in ((True, "recorded"), (False, "raw"))
    )


def camera_bytes_query(window_s: int, selector: str = "") -> str:
    """Request bytes each camera sent over the last ``window_s``."""
    return f"sum by (edge_node, camera) (increase({series(CAMERA_REQUEST_BYTES_TOTAL, selector)}[{window_s}s]))"


def link_query(selector: str = "") -> str:
    """The last spectral efficiency the gateways measured for each camera."""
    return f"max by (edge_node, camera) ({series(CAMERA_LINK_SPECTRAL_EFFICIENCY, selector)})"


def duration_query(window_s: int, selector: str = "") -> str:
    """Sum and count of the gateways' response times over the last ``window_s``, in one query (label ``part``).

    Both from the histogram's raw series, so that increase() extrapolates them alike: the count of
    the recorded request counter (evaluated at other moments) made the mean 10 % off in a test.
    """
    parts = (
        f"label_replace(sum(increase({series(f'{REQUEST_DURATION_SECONDS}_{part}', selector)}[{window_s}s])), "
        f'"part", "{part}", "", "")'
        for part in ("sum", "count")
    )
    return " or ".join(parts)


def relayed_bytes_query(window_s: int, selector: str = "") -> str:
    """Request and response bytes of the requests relayed to the cloud over the last ``window_s``."""
    parts = (
        f"(sum(increase({series(f'edgeaigc_{name}_bytes_total', selector, CLOUD)}[{window_s}s])) or vector(0))"
        for name in ("request", "response")
    )
    return " + ".join(parts)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the gateways measured over one interval (None: no requests in it)."""

    hit_rate: float | None
    mean_response_time_s: float | None
    cost_per_hour: float | None
    """Cloud compute and transfer of the relayed requests plus edge energy of the hits, dollars
    per hour (the system model's serving cost, from measured counts and bytes; downloads excluded)."""


def observed_from_samples(
    scenario: Scenario,
    served: Sequence[Sample],
    duration_sum: Sequence[Sample],
    duration_count: Sequence[Sample],
    relayed_bytes: Sequence[Sample],
    window_s: float,
) -> Observed:
    """Hit rate, mean response time and cost per hour from the query results (pure).

    ``served`` is the requests of each (edge node, model, place) over the window (:func:`requests_query`).
    Cost uses the prices of the fleet (``spec.cloud``, EdgeNode energy prices) and each model's work
    per request, as the system model does, but the measured request counts and relayed bytes; series
    of unknown nodes or models count for the hit rate only.
    """
    nodes = {name: e for e, name in enumerate(scenario.node_names)}
    models = {name: m for m, name in enumerate(scenario.model_names)}
    edge, total, cloud_compute, energy = 0.0, 0.0, 0.0, 0.0
    for sample in served:
        labels, count = sample["metric"], max(_value(sample), 0.0)
        total += count
        e, m = nodes.get(labels.get("edge_node", "")), models.get(labels.get("model", ""))
        if labels.get("served_by") == "edge":
            edge += count
            if e is not None and m is not None:
                energy += (
                    count
                    * scenario.model_work_s[m]
                    / scenario.node_core_speed[e]
                    * scenario.node_energy_price_per_core_second[e]
                )
        elif m is not None:
            cloud_compute += (
                count * scenario.model_work_s[m] / scenario.cloud_core_speed * scenario.cloud_price_per_core_second
            )
    if total <= 0:
        return Observed(None, None, None)
    seconds = sum(_value(s) for s in duration_sum)
    count = sum(_value(s) for s in duration_count)
    transfer = sum(max(_value(s), 0.0) for s in relayed_bytes) / 1e9 * scenario.price_per_gb_transfer
    return Observed(
        hit_rate=edge / total,
        mean_response_time_s=seconds / count if count > 0 else None,
        cost_per_hour=float(cloud_compute + transfer + energy) * 3600 / window_s,
    )


def _value(sample: Sample) -> float:
    value = float(sample["value"][1])
    return value if np.isfinite(value) else 0.0


def node_counts_from_samples(scenario: Scenario, samples: Sequence[Sample]) -> np.ndarray:
    """``[E, M]`` requests of each (edge node, model), summed over places; unknown nodes or models are ignored."""
    nodes = {name: e for e, name in enumerate(scenario.node_names)}
    models = {name: m for m, name in enumerate(scenario.model_names)}
    counts = np.zeros((scenario.num_nodes, scenario.num_models))
    for sample in samples:
        labels = sample["metric"]
        e, m = nodes.get(labels.get("edge_node", "")), models.get(labels.get("model", ""))
        if e is not None and m is not None:
            counts[e, m] += max(_value(sample), 0.0)
    return counts


def camera_bytes_from_samples(scenario: Scenario, samples: Sequence[Sample]) -> np.ndarray:
    """``[U]`` request bytes of each camera (whatever node counted them); unknown cameras are ignored."""
    cameras = {name: u for u, name in enumerate(scenario.camera_names)}
    sent = np.zeros(scenario.num_cameras)
    for sample in samples:
        u = cameras.get(sample["metric"].get("camera", ""))
        if u is not None:
            sent[u] += max(_value(sample), 0.0)
    return sent


def camera_rates_of(scenario: Scenario, node_rates: np.ndarray, camera_bytes: np.ndarray) -> np.ndarray:
    """``[U, M]`` rates: each node's rate of a model split over its cameras by their share of its request bytes.

    What the encoder reads of a camera's rates is exact this way: the node's rates (their sum over
    its cameras) and the camera's upload (``rates @ input size``, which is the camera's bytes when
    the node's bytes are its requests times the models' input sizes). Only how one camera's requests
    split over models is assumed to be its node's mix. A node whose cameras sent no bytes (a 413
    before the body, or no requests) splits evenly.
    """
    attached = scenario.camera_node
    node_bytes = np.bincount(attached, weights=camera_bytes, minlength=scenario.num_nodes)
    cameras_at_node = np.bincount(attached, minlength=scenario.num_nodes)
    share = np.where(
        node_bytes[attached] > 0,
        camera_bytes / np.where(node_bytes > 0, node_bytes, 1.0)[attached],
        1.0 / np.maximum(cameras_at_node, 1)[attached],
    )
    return np.asarray(node_rates, float)[attached] * share[:, None]


def link_from_samples(scenario: Scenario, samples: Sequence[Sample]) -> np.ndarray:
    """``[U]`` spectral efficiency; a camera without a sample gets the median link state."""
    cameras = {name: u for u, name in enumerate(scenario.camera_names)}
    link = np.full(scenario.num_cameras, float(np.median(scenario.link_states)))
    for sample in samples:
        u = cameras.get(sample["metric"].get("camera", ""))
        if u is not None and _value(sample) > 0:
            link[u] = _value(sample)
    return link


def observation_from_samples(
    scenario: Scenario,
    last_interval: Sequence[Sample],
    recent_window: Sequence[Sample],
    camera_bytes_last: Sequence[Sample],
    camera_bytes_recent: Sequence[Sample],
    link: Sequence[Sample],
    cache: np.ndarray,
    now: datetime.datetime,
    window_s: float,
    trend_s: float | None = None,
) -> Observation:
    """The policy's observation from the query results (request counts over ``window_s`` and over the
    trend window, ``trend_s``: by default :data:`TREND_WINDOW_SLOTS` intervals) and the current placement."""

    def rates(requests: Sequence[Sample], camera_bytes: Sequence[Sample], seconds: float) -> np.ndarray:
        node_rates = node_counts_from_samples(scenario, requests) / seconds
        return camera_rates_of(scenario, node_rates, camera_bytes_from_samples(scenario, camera_bytes))

    last = rates(last_interval, camera_bytes_last, window_s)
    node_rates = node_rates_of(scenario, last)
    utilisation = (node_rates * scenario.model_work_s * cache).sum(axis=1) / scenario.node_compute
    return Observation(
        camera_rates=last,
        camera_rates_recent_mean=rates(
            recent_window, camera_bytes_recent, window_s * TREND_WINDOW_SLOTS if trend_s is None else trend_s
        ),
        link_quality=link_from_samples(scenario, link),
        cache=cache.astype(float),
        node_compute_utilisation=utilisation,
        hour_of_day=now.hour + now.minute / 60 + now.second / 3600,
    )


#: Queries of one :meth:`PrometheusObserver.read`, whatever the fleet's size, when it reads the trend window
#: too. When no pair counted a request, one more per request read asks whether the series exist; and one more
#: again on a Prometheus without the recording rules (the decision loop makes an observer per decision).
QUERIES_PER_READ = 7
#: Queries of a read whose trend window comes from the operator's own record (:mod:`.demand_history`).
QUERIES_PER_STEADY_READ = 5
#: What a request read gives when the series exist but no pair counted a request over the window (no labels:
#: it counts as no request for every figure).
NOTHING_COUNTED: dict[str, Any] = {"metric": {}, "value": [0, "0"]}


#: A read's bound is a share of the decision interval, but never below this.
MIN_READ_TIMEOUT_S = 5.0
READ_SHARE_OF_INTERVAL = 0.25


def read_timeout_s(interval_s: float) -> float:
    """How long a decision's Prometheus read may take: a quarter of the interval, at least 5 s."""
    return max(MIN_READ_TIMEOUT_S, READ_SHARE_OF_INTERVAL * interval_s)


@dataclasses.dataclass
class PrometheusObserver:
    """Runs the observation queries against one Prometheus.

    :data:`QUERIES_PER_READ` queries per interval, each returning every series of its figure: the
    requests of each (edge node, model, place) over the last interval and over the trend window
    (from the recording rule), each camera's request bytes over both, the cameras' links, the sum of
    response times and the relayed bytes. At 100 nodes x 20 models x 400 cameras the largest reads
    4 000 series (it read 16 000 per-(camera, model) counters before). The queries are sent at once,
    each on a thread of a small pool, and the read is bounded by ``timeout_s`` as a whole (by default a
    quarter of the decision interval, at least 5 s: at 1000 nodes x 50 models x 4000 cameras the
    queries took 3.5-5.3 s, and a fixed 5 s made every few decisions fail).
    """

    url: str
    selector: str = ""
    """PromQL label matchers added to every query (``spec.prometheusSelector``), e.g. ``namespace="city"``."""
    timeout_s: float | None = None
    """Bound of a read (None: :func:`read_timeout_s` of the interval)."""
    queries_sent: int = dataclasses.field(default=0, init=False)
    """Queries sent since this observer was made (the benchmark reports them per interval)."""
    query_seconds: float = dataclasses.field(default=0.0, init=False)
    """Wall-clock time of the reads (the queries overlap), answers and failures alike."""
    recorded: bool = dataclasses.field(default=True, init=False)
    """Whether the requests come from the recording rule; False once it returned nothing while the raw counters
    had series (a Prometheus without the chart's rules)."""
    _client: Any = dataclasses.field(default=None, init=False, repr=False)
    _counting: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False)

    def _connection(self, timeout_s: float = MIN_READ_TIMEOUT_S) -> Any:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        if self._client is None:
            # No retries: a failing Prometheus is reported now and retried at the next interval.
            self._client = PrometheusConnect(
                url=self.url, disable_ssl=True, timeout=math.ceil(max(timeout_s, 1)), retry=Retry(total=0)
            )
        return self._client

    def _query(self, query: str) -> list[dict[str, Any]]:
        with self._counting:  # the queries of a read run on several threads
            self.queries_sent += 1
        return self._send(query)

    def _send(self, query: str) -> list[dict[str, Any]]:
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from requests.exceptions import RequestException

        try:
            return list(self._connection().custom_query(query))
        except (RequestException, ConnectionError) as error:
            raise ObservationError(
                "PrometheusUnreachable", f"Prometheus at {self.url} is unreachable: {error}"
            ) from error
        except PrometheusApiClientException as error:
            raise ObservationError("PrometheusQueryFailed", f"query {query!r} failed: {error}") from error

    def _requests(self, window_s: int, by: str) -> list[dict[str, Any]]:
        """:func:`requests_query`, from the recording rule while Prometheus has it.

        The pairs that counted requests; ``[NOTHING_COUNTED]`` when series exist but none counted one,
        ``[]`` when there are no request series at all (a new fleet's gateways, lost metrics).
        """
        counted = self._query(requests_query(window_s, self.selector, by, self.recorded))
        if counted:
            return counted
        # Nothing counted: are there series at all, and from the recording rule or only the gateways'
        # counters (a Prometheus without the chart's rules)?
        sources = {s["metric"].get("source") for s in self._query(request_series_query(self.selector))}
        if self.recorded and "recorded" not in sources and "raw" in sources:
            self.recorded = False
            counted = self._query(requests_query(window_s, self.selector, by, recorded=False))
        return counted or ([NOTHING_COUNTED] if sources else [])

    def read(self, interval_s: int, earlier: EarlierWindows | None = None) -> PrometheusSamples:
        """Every figure of one decision (:data:`QUERIES_PER_READ` queries, sent at once).

        With ``earlier`` (the operator's own record of the last intervals, :mod:`.demand_history`) the
        trend window is those intervals and this one, and is not read (:data:`QUERIES_PER_STEADY_READ`).

        Raises:
            ObservationError: the first failure in the order of the queries, or ``PrometheusUnreachable`` when
                they have not all answered within ``timeout_s``.
        """
        trend_s = interval_s * TREND_WINDOW_SLOTS
        reads: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "last_interval": functools.partial(self._requests, interval_s, "edge_node, model, served_by"),
            "camera_bytes_last": functools.partial(self._query, camera_bytes_query(interval_s, self.selector)),
            "link": functools.partial(self._query, link_query(self.selector)),
            "duration": functools.partial(self._query, duration_query(interval_s, self.selector)),
            "relayed_bytes": functools.partial(self._query, relayed_bytes_query(interval_s, self.selector)),
        }
        if earlier is None:
            reads["recent_window"] = functools.partial(self._requests, trend_s, "edge_node, model")
            reads["camera_bytes_recent"] = functools.partial(self._query, camera_bytes_query(trend_s, self.selector))
        # All at once: each query waits mostly on Prometheus (one after the other they took 0.4-2 s at
        # 100 nodes on a loaded machine); the connection pool of the client holds 10.
        timeout_s = self.timeout_s if self.timeout_s is not None else read_timeout_s(interval_s)
        self._connection(timeout_s)  # made once, before the threads share it
        started = time.perf_counter()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(reads), thread_name_prefix="prometheus")
        try:
            futures = {figure: pool.submit(read) for figure, read in reads.items()}
            _, late = concurrent.futures.wait(futures.values(), timeout=timeout_s)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self.query_seconds += time.perf_counter() - started
        for future in futures.values():  # the first failure in the queries' order, as one after the other
            if future.done() and not future.cancelled() and (error := future.exception()) is not None:
                raise error
        if late:
            raise ObservationError(
                "PrometheusUnreachable",
                f"Prometheus at {self.url} did not answer {len(late)} of {len(reads)} queries within {timeout_s:g} s",
            )
        results = {figure: future.result() for figure, future in futures.items()}
        if earlier is not None:  # the trend window: the earlier intervals and this one
            results["recent_window"] = [*earlier.requests, *results["last_interval"]]
            results["camera_bytes_recent"] = [*earlier.camera_bytes, *results["camera_bytes_last"]]
        return PrometheusSamples(
            last_interval=results["last_interval"],
            recent_window=results["recent_window"],
            camera_bytes_last=results["camera_bytes_last"],
            camera_bytes_recent=results["camera_bytes_recent"],
            link=results["link"],
            duration=results["duration"],
            relayed_bytes=results["relayed_bytes"],
            window_s=interval_s,
            recent_s=None if earlier is None else earlier.seconds + interval_s,
        )


def _counted(samples: Sequence[Sample]) -> float:
    """Requests counted by all ``samples`` together (NaN values, which increase() can give, count as none)."""
    return float(np.nansum([float(sample["value"][1]) for sample in samples])) if samples else 0.0


@dataclasses.dataclass(frozen=True)
class PrometheusSamples:
    """The query results of one decision (see :meth:`PrometheusObserver.read`)."""

    last_interval: Sequence[Sample]
    """Requests of each (edge node, model, place) over the last interval."""
    recent_window: Sequence[Sample]
    """Requests of each (edge node, model) over the trend window."""
    camera_bytes_last: Sequence[Sample]
    camera_bytes_recent: Sequence[Sample]
    link: Sequence[Sample]
    duration: Sequence[Sample]
    """Sum and count of the response times over the last interval (label ``part``)."""
    relayed_bytes: Sequence[Sample]
    window_s: int
    recent_s: float | None = None
    """How long the trend window is (None: ``window_s`` x :data:`TREND_WINDOW_SLOTS`, as read from Prometheus)."""

    @property
    def trend_s(self) -> float:
        return self.window_s * TREND_WINDOW_SLOTS if self.recent_s is None else self.recent_s

    def observation(self, scenario: Scenario, cache: np.ndarray, now: datetime.datetime) -> Observation:
        """The policy's observation (pure).

        Raises:
            ObservationError: ``NoMetrics``, no request series while models are cached; ``NoRequestsCounted``,
                series that counted no request over the last interval while models are cached and the trend
                window counted some.
        """
        # No series and nothing cached: a new fleet, whose gateways count nothing until they have a
        # routing table, which the operator writes only after a decision. Decide on zero demand (every
        # request to the cloud) to break that circle. With models cached, no series means lost metrics:
        # keep the placement (a decision on zero demand could delete a working one).
        if not self.last_interval and np.asarray(cache).any():
            raise ObservationError(
                "NoMetrics", f"Prometheus has no {REQUESTS_TOTAL} series yet (are the gateways scraped?)"
            )
        # Series that all stood still for an interval after counting requests: a scrape gap, a stalled
        # exporter or a window that fell between a counter's steps (the 1000-node benchmark's twin did this
        # every decision), far more often than a whole fleet going quiet at once. Deciding on it would
        # evict every model, and the next interval would download them again (the flip-flop seen at 300
        # nodes). Keep the placement; a fleet that really went quiet empties the trend window too, and is
        # then decided on.
        recent = _counted(self.recent_window)
        if np.asarray(cache).any() and _counted(self.last_interval) == 0 and recent > 0:
            raise ObservationError(
                "NoRequestsCounted",
                f"no request was counted over the last {self.window_s} s although the "
                f"{self.trend_s:g} s before counted {recent:.0f}: "
                "keeping the placement (are the gateways scraped every interval?)",
            )
        return observation_from_samples(
            scenario,
            self.last_interval,
            self.recent_window,
            self.camera_bytes_last,
            self.camera_bytes_recent,
            self.link,
            cache,
            now,
            self.window_s,
            self.trend_s,
        )

    def observed(self, scenario: Scenario) -> Observed:
        """What the gateways measured over the window (pure)."""
        return observed_from_samples(
            scenario,
            self.last_interval,
            [s for s in self.duration if s["metric"].get("part") == "sum"],
            [s for s in self.duration if s["metric"].get("part") == "count"],
            self.relayed_bytes,
            self.window_s,
        )


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything one decision reads, as it was read.

    A failed read that has a reason of its own (Prometheus's, the actor's) is kept as that failure
    instead of raised, so the decision reports problems in the order it meets them: the fleet
    first, then the metrics, then the policy. Other API failures are raised by :func:`observe`.
    """

    policy: Resource
    """The PlacementPolicy: ``metadata``, ``spec`` (with the CRD's defaults) and ``status``."""
    edge_nodes: list[Resource]
    models: list[Resource]
    cameras: list[Resource]
    owned: list[Resource]
    """The Deployments, Services and ConfigMaps the operator created for the policy (``kind`` set)."""
    pods: list[Resource]
    """The policy's model pods, edge and cloud (their CPU, whether their artifact was fetched)."""
    allocatable: dict[str, dict[str, str]]
    """Kubernetes Node name -> its ``status.allocatable``."""
    actor: bytes | PolicyUnavailable | None
    """The ONNX actor of ``spec.actor`` (None: the policy has none)."""
    samples: PrometheusSamples | ObservationError
    now: datetime.datetime
    policies: list[Resource] = dataclasses.field(default_factory=list)
    """Every PlacementPolicy of the namespace, this one included: the shards whose selectors may overlap its."""


class ClusterReader:
    """The API reads of a decision: from the watch-based caches of :mod:`.object_cache` while they are synced,
    else listed (the lists of the operator's objects and pods are retried like its writes)."""

    def __init__(
        self,
        api_client: ApiClient,
        retry: RetryPolicy | None = None,
        caches: ObjectCaches | None = None,
        sync_wait_s: float = 10.0,
    ) -> None:
        self.custom = CustomObjectsApi(api_client)
        self.core = CoreV1Api(api_client)
        self.dynamic = DynamicClient(api_client)
        self.retry = retry or RetryPolicy()
        self.caches = caches
        """None: every read is a list."""
        self.sync_wait_s = sync_wait_s
        """How long a read waits for a cache's first list before listing itself."""
        self.listed = 0
        """Reads that were lists (a cache not synced, or none), for tests and the benchmark."""
        self._held: dict[str, dict[str, ObjectCache]] = {}

    def _cached(self, namespace: str, kind: str) -> list[Resource] | None:
        """The cached objects of ``kind`` in ``namespace`` (``""``: cluster-scoped); None: list them."""
        if self.caches is None:
            return None
        if namespace not in self._held:
            self._held[namespace] = self.caches.hold(namespace)
        cache = self._held[namespace].get(kind)
        if cache is None:  # a kind no cache follows: list it
            self.listed += 1
            return None
        items = cache.items(self.sync_wait_s)
        if items is None:
            self.listed += 1
        return items

    def close(self) -> None:
        """Release the caches this reader used (they stop when no reader holds them)."""
        if self.caches is not None:
            for namespace in list(self._held):
                self.caches.release(namespace)
        self._held.clear()

    def custom_objects(self, namespace: str, plural: str) -> list[Resource]:
        cached = self._cached(namespace, plural)
        if cached is not None:
            return cached
        result: dict[str, Any] = self.custom.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, plural)  # type: ignore[assignment]
        return list(result["items"])

    def _list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Resource]:
        """The objects of one kind matching ``selector``, each with its ``apiVersion`` and ``kind`` set.

        One list per kind, parsed straight from the response's JSON: the dynamic client's objects
        (``ResourceInstance.to_dict()``) took 2-4 s for the ~200 pods and ~400 Deployments, Services and
        ConfigMaps of 100 nodes x 20 models on a loaded 2-core machine, most of an interval's observe.
        """
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        response = with_retries(
            functools.partial(resource.get, namespace=namespace, label_selector=selector, serialize=False),
            f"list {kind}s",
            self.retry,
        )
        items: list[Resource] = json.loads(response.data)["items"]
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def _of_policy(
        self, api_version: str, kind: str, namespace: str, policy_name: str, selector: str
    ) -> list[Resource]:
        """The objects of ``kind`` labelled with the policy: the namespace's cache, filtered, or a list."""
        cached = self._cached(namespace, kind)
        if cached is None:
            return self._list(api_version, kind, namespace, f"{selector},{c.LABEL_POLICY}={policy_name}")
        return [item for item in cached if (item["metadata"].get("labels") or {}).get(c.LABEL_POLICY) == policy_name]

    def owned(self, namespace: str, policy_name: str) -> list[Resource]:
        managed = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
        return [
            item
            for version, kind in MANAGED_KINDS
            for item in self._of_policy(version, kind, namespace, policy_name, managed)
        ]

    def pods(self, namespace: str, policy_name: str) -> list[Resource]:
        return self._of_policy("v1", "Pod", namespace, policy_name, c.LABEL_POLICY)

    def allocatable(self) -> dict[str, dict[str, str]]:
        nodes = self._cached("", "Node")
        if nodes is None:
            # The list's JSON, not the client's V1Node objects (their deserialisation is most of the read).
            response: Any = self.core.list_node(_preload_content=False)
            nodes = json.loads(response.data)["items"]
        return {
            str(node["metadata"]["name"]): dict((node.get("status") or {}).get("allocatable") or {}) for node in nodes
        }

    def actor(self, namespace: str, spec: Mapping[str, Any]) -> bytes | PolicyUnavailable | None:
        """The bytes of ``spec.actor`` (None without one; the failure when they cannot be read)."""
        actor = spec.get("actor")
        if not actor:
            return None
        name, key = actor["configMapName"], actor["key"]
        try:
            # The JSON, not a V1ConfigMap: the actor's bytes are read every interval.
            response: Any = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            data = (json.loads(response.data).get("binaryData") or {}).get(key)
        except ApiException as error:
            return PolicyUnavailable(f"cannot load the {spec['algorithm']} policy: {error.status} {error.reason}")
        if data is None:
            return PolicyUnavailable(
                f"cannot load the {spec['algorithm']} policy: ConfigMap {name} has no binaryData key {key!r}"
            )
        return base64.b64decode(data)


def observe(
    cluster: ClusterReader,
    prometheus: PrometheusObserver,
    policy: Mapping[str, Any],
    history: DemandHistory | None = None,
) -> Snapshot:
    """Read everything one decision of ``policy`` needs (raises ApiException for a failed API read).

    With ``history`` (the policy's decision loop keeps one) the trend window is read from Prometheus only
    until the history holds the last intervals, and each read's counts are added to it.
    """
    metadata = policy["metadata"]
    spec = with_defaults("PlacementPolicy", policy["spec"])
    namespace, name = metadata["namespace"], metadata["name"]
    edge_nodes = cluster.custom_objects(namespace, c.PLURAL_EDGE_NODES)
    models = cluster.custom_objects(namespace, c.PLURAL_MODELS)
    cameras = cluster.custom_objects(namespace, c.PLURAL_CAMERAS)
    # The whole fleet is read; decide() keeps this policy's shard (spec.edgeNodeSelector) and
    # checks the other policies' selectors for overlaps.
    policies = cluster.custom_objects(namespace, c.PLURAL_POLICIES)
    owned, pods = cluster.owned(namespace, name), cluster.pods(namespace, name)
    allocatable, actor = cluster.allocatable(), cluster.actor(namespace, spec)
    # The queries after the lists, not beside them: overlapped in a thread, observe was no faster on
    # the loaded 2-core machine (p50 1.84 s at load 13 against 2.28 s at load 17; the GIL and the
    # cores are shared), so the simpler order stays.
    samples: PrometheusSamples | ObservationError
    interval_s, source = int(spec["intervalSeconds"]), (prometheus.url, prometheus.selector)
    earlier = None if history is None else history.earlier(source, datetime.datetime.now(datetime.UTC), interval_s)
    try:
        samples = prometheus.read(interval_s, earlier)
    except ObservationError as error:
        samples = error
    read_at = datetime.datetime.now(datetime.UTC)
    if history is not None and not isinstance(samples, ObservationError):
        history.record(source, read_at, interval_s, samples.last_interval, samples.camera_bytes_last)
    return Snapshot(
        policy={"metadata": metadata, "spec": spec, "status": policy.get("status") or {}},
        edge_nodes=edge_nodes,
        models=models,
        cameras=cameras,
        owned=owned,
        pods=pods,
        allocatable=allocatable,
        actor=actor,
        samples=samples,
        now=read_at,
        policies=policies,
    )
