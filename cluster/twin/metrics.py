"""The twin's metrics: the gateways' request metrics (``docs/metrics-contract.md``) and the twin's own gauges.

One exporter: :meth:`TwinMetrics.exposition` walks the counters once per scrape and writes the
text format directly; :meth:`TwinMetrics.collect` runs the same walk into the Python client's
families (so a registry can scrape the twin too, and a test checks both give the same bytes).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edgeaigc.cluster.twin.slots import ServedSlot
from edgeaigc.inference import metrics_contract as contract
from edgeaigc.policy.scenario import Scenario

IN_FLIGHT = contract.Family(
    contract.REQUESTS_IN_FLIGHT,
    "gauge",
    contract.GATEWAY_IN_FLIGHT_LABELS,
    "Inference requests being handled now (the twin: mean over its last slot).",
)
#: The twin's own gauges and counter: (name, type, help).
SLOT = ("edgeaigc_twin_slot", "gauge", "Slots the traffic twin has served (one per tick).")
HOUR = ("edgeaigc_twin_hour_of_day", "gauge", "Hour of the simulated day at the twin's last slot.")
HIT_RATE = ("edgeaigc_twin_hit_rate", "gauge", "Share of the last slot's requests served at the edge.")
COST = (
    "edgeaigc_twin_cost_dollars_total",
    "counter",
    "Cost of the requests the twin served (cloud compute, transfer, edge energy, model downloads), dollars.",
)
BUCKET_LABELS = (*contract.GATEWAY_REQUEST_DURATION.labels, "le")

#: A family's header: (name as exposed, type, help).
FamilyStart = Callable[[str, str, str], None]
#: One sample: (sample name, label names, label values, value).
SampleOut = Callable[[str, Sequence[str], tuple[str, ...], float], None]


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class TwinMetrics(Collector):
    """Cumulative request metrics and the twin's gauges, exported whole at each scrape.

    A slot added with :meth:`add` is *played* over the tick that follows, as a gateway counts its
    requests while they arrive: a scrape sees the slot's counts in proportion to the time since it was
    added (over the tick, or over the last cycle when the twin's step ran late), and the rest of it
    when the next slot is added. Counters that stepped once per tick made ``increase()`` over a window
    of one tick see either nothing or 1.5 slots, by the phase of the scrapes alone: at 1000 nodes
    (60-s tick, 20-s scrapes, a decision every 60 s) every decision saw zero requests and TD3 placed
    nothing. Gauges change at :meth:`add`. All under a lock, so a scrape never sees half a slot.
    """

    def __init__(
        self, buckets: Sequence[float] = contract.REQUEST_LATENCY_BUCKETS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.buckets = np.asarray(buckets, dtype=float)
        self.clock = clock
        # The ``le`` label of each bucket, as the text format writes it.
        self._bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str, str], float] = {}
        self._request_seconds: dict[tuple[str, str, str], float] = {}
        self._bucket_counts: dict[tuple[str, str], np.ndarray] = {}
        self._duration_sum: dict[tuple[str, str], float] = {}
        self._camera_bytes: dict[tuple[str, str], float] = {}
        self._request_bytes: dict[tuple[str, str], float] = {}
        self._response_bytes: dict[tuple[str, str], float] = {}
        self._in_flight: dict[tuple[str, str], float] = {}
        self._link: dict[tuple[str, str], float] = {}
        self._slot = 0
        self._hour = 0.0
        self._hit_rate = 0.0
        self._cost = 0.0
        self._counters: dict[str, dict[Any, float]] = {
            "requests": self._requests,
            "request_seconds": self._request_seconds,
            "duration_sum": self._duration_sum,
            "camera_bytes": self._camera_bytes,
            "request_bytes": self._request_bytes,
            "response_bytes": self._response_bytes,
        }
        # The slot being played: its increments of each counter, when it started and over how long.
        self._playing: dict[str, dict[Any, float]] = {name: {} for name in self._counters}
        self._playing_buckets: dict[tuple[str, str], np.ndarray] = {}
        self._playing_cost = 0.0
        self._playing_since: float | None = None
        self._playing_seconds = 1.0
        self._initialised: set[tuple[tuple[str, ...], ...]] = set()
        self._label_text: dict[tuple[Any, ...], str] = {}

    def _initialise(self, scenario: Scenario) -> None:
        """Create every series of the fleet at zero (caller holds the lock).

        A counter that first appears in the middle of a query window loses its first increment to
        ``increase()``/``rate()``; starting all (node, model, served_by) and camera series at zero keeps
        the operator's rate queries exact when a node's cameras switch to a model they never used.
        """
        # Attachments count too: a camera moved to another node needs that node's series.
        attached = tuple(scenario.node_names[e] for e in scenario.camera_node)
        fleet = (scenario.node_names, scenario.camera_names, scenario.model_names, attached)
        if fleet in self._initialised:
            return
        self._initialised.add(fleet)
        for camera, node in zip(scenario.camera_names, attached, strict=True):
            self._camera_bytes.setdefault((node, camera), 0.0)
        for node in scenario.node_names:
            for where in contract.SERVED_BY_VALUES:
                self._bucket_counts.setdefault((where, node), np.zeros(self.buckets.size + 1))
                self._duration_sum.setdefault((where, node), 0.0)
                self._request_bytes.setdefault((where, node), 0.0)
                self._response_bytes.setdefault((where, node), 0.0)
                for model in scenario.model_names:
                    self._requests.setdefault((model, "200", where, node), 0.0)
                    self._request_seconds.setdefault((model, where, node), 0.0)

    def _finish_playing(self) -> None:
        """Add the rest of the slot being played to the counters (caller holds the lock)."""
        for name, increments in self._playing.items():
            counter = self._counters[name]
            for key, value in increments.items():
                counter[key] += value
        for place, counts in self._playing_buckets.items():
            self._bucket_counts[place] += counts
        self._cost += self._playing_cost

    def played(self) -> float:
        """Share of the slot being played that the counters show now (caller holds the lock)."""
        if self._playing_since is None:
            return 1.0
        return min(max((self.clock() - self._playing_since) / self._playing_seconds, 0.0), 1.0)

    def add(self, served: ServedSlot, tick_seconds: float) -> None:
        scenario = served.scenario
        input_bytes = scenario.model_input_mbit * 1e6 / 8
        output_bytes = scenario.model_output_mbit * 1e6 / 8
        bucket_index = np.searchsorted(self.buckets, served.seconds, side="left")  # le: seconds <= bound
        # Every gateway reports both places, as a real gateway's gauge does.
        in_flight = {(where, node): 0.0 for where in contract.SERVED_BY_VALUES for node in scenario.node_names}
        slot: dict[str, defaultdict[Any, float]] = {name: defaultdict(float) for name in self._counters}
        buckets: dict[tuple[str, str], np.ndarray] = {}
        for u, m in zip(*np.nonzero(served.counts), strict=True):
            count = float(served.counts[u, m])
            where = "edge" if served.hit[u, m] else "cloud"
            model, node = scenario.model_names[m], scenario.node_names[scenario.camera_node[u]]
            camera = scenario.camera_names[u]
            slot["requests"][(model, "200", where, node)] += count
            slot["request_seconds"][(model, where, node)] += count * served.seconds[u, m]
            buckets.setdefault((where, node), np.zeros(self.buckets.size + 1))[bucket_index[u, m]] += count
            slot["duration_sum"][(where, node)] += count * served.seconds[u, m]
            slot["camera_bytes"][(node, camera)] += count * input_bytes[m]
            slot["request_bytes"][(where, node)] += count * input_bytes[m]
            slot["response_bytes"][(where, node)] += count * output_bytes[m]
            # Little's law: requests in flight on average = arrival rate x time in the system.
            in_flight[(where, node)] += count / tick_seconds * served.seconds[u, m]
        with self._lock:
            self._initialise(scenario)
            self._finish_playing()
            now = self.clock()
            # Played over the tick, or over the last cycle when the step came late: the next slot is
            # expected as late again, and whatever is left of this one is added when it comes.
            since_last = 0.0 if self._playing_since is None else now - self._playing_since
            self._playing = {name: dict(increments) for name, increments in slot.items()}
            self._playing_buckets, self._playing_cost = buckets, float(served.outcome.cost)
            self._playing_since, self._playing_seconds = now, max(tick_seconds, since_last)
            self._in_flight = in_flight
            self._link = {
                (scenario.node_names[scenario.camera_node[u]], scenario.camera_names[u]): float(served.link_quality[u])
                for u in range(scenario.num_cameras)
            }
            self._slot = served.slot
            self._hour = served.hour_of_day
            self._hit_rate = served.outcome.hit_rate

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

    def _walk(self, family: FamilyStart, sample: SampleOut) -> None:
        """Every family and sample in exposition order (caller holds the lock): the one place that lists them."""
        played = self.played()

        def labelled(of: contract.Family, values: dict[Any, float]) -> None:
            family(of.name, of.kind, of.help)
            for key, value in sorted(values.items()):
                sample(of.name, of.labels, key, value)

        def counter(of: contract.Family, name: str) -> None:
            family(of.name, of.kind, of.help)
            playing = self._playing[name]
            for key, value in sorted(self._counters[name].items()):
                sample(of.name, of.labels, key, value + played * playing.get(key, 0.0))

        counter(contract.GATEWAY_REQUESTS, "requests")
        duration = contract.GATEWAY_REQUEST_DURATION
        family(duration.name, duration.kind, duration.help)
        for place, counts in sorted(self._bucket_counts.items()):
            playing = self._playing_buckets.get(place)
            cumulative = np.cumsum(counts if playing is None else counts + played * playing)
            for bound, count in zip(self._bounds, cumulative, strict=True):
                sample(f"{duration.name}_bucket", BUCKET_LABELS, (*place, bound), float(count))
            sample(f"{duration.name}_count", duration.labels, place, float(cumulative[-1]))
            sum_playing = self._playing["duration_sum"].get(place, 0.0)
            sample(f"{duration.name}_sum", duration.labels, place, self._duration_sum[place] + played * sum_playing)
        counter(contract.GATEWAY_REQUEST_SECONDS, "request_seconds")
        counter(contract.GATEWAY_REQUEST_BYTES, "request_bytes")
        counter(contract.GATEWAY_RESPONSE_BYTES, "response_bytes")
        counter(contract.CAMERA_REQUEST_BYTES, "camera_bytes")
        labelled(IN_FLIGHT, self._in_flight)
        labelled(contract.CAMERA_LINK, self._link)
        for (name, kind, documentation), value in (
            (SLOT, float(self._slot)),
            (HOUR, self._hour),
            (HIT_RATE, self._hit_rate),
            (COST, self._cost + played * self._playing_cost),
        ):
            family(name, kind, documentation)
            sample(name, (), (), value)

    def exposition(self) -> bytes:
        """The text format (0.0.4), exactly as :func:`prometheus_client.generate_latest` writes :meth:`collect`.

        Written from the counters directly, with each series' labels formatted once: at 100 nodes x 20 models x
        400 cameras (~88 000 samples with the per-(camera, model) series of before; ~17 000 now) ``generate_latest``
        took 1-4 s of a core, and under the benchmark's load
        the scrape took longer than Prometheus waits (10 s): whole intervals of samples were lost.
        """
        lines: list[str] = []

        def family(name: str, kind: str, documentation: str) -> None:
            escaped = documentation.replace("\\", r"\\").replace("\n", r"\n")
            lines.append(f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n")

        def sample(name: str, names: Sequence[str], values: tuple[str, ...], value: float) -> None:
            lines.append(f"{self._labelled(name, names, values)} {floatToGoString(value)}\n")

        with self._lock:
            self._walk(family, sample)
        return "".join(lines).encode()

    def collect(self) -> Iterator[Metric]:
        """The same families for a ``prometheus_client`` registry (a counter's family name drops ``_total``)."""
        metrics: list[Metric] = []

        def family(name: str, kind: str, documentation: str) -> None:
            metrics.append(Metric(name.removesuffix("_total") if kind == "counter" else name, documentation, kind))

        def sample(name: str, names: Sequence[str], values: tuple[str, ...], value: float) -> None:
            metrics[-1].add_sample(name, dict(zip(names, values, strict=True)), value)

        with self._lock:
            self._walk(family, sample)
        yield from metrics
