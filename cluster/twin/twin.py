"""The twin's tick loop: read the cluster, serve one slot of the demand trace, add it to the metrics.

The time mapping and what is read are described in :mod:`edgeaigc.cluster.twin`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque

import numpy as np

from edgeaigc.cluster.twin.fleet_source import READ_ERRORS, Fleet, FleetSource
from edgeaigc.cluster.twin.metrics import TwinMetrics
from edgeaigc.cluster.twin.placement import BandwidthShares, ComputeShares, bandwidth_shares, compute_shares, plan_for
from edgeaigc.cluster.twin.slots import ServedSlot, serve_slot
from edgeaigc.inference.gateway.routing_table import parse_routing_table
from edgeaigc.policy.demand import DemandGenerator, EpisodeTrace
from edgeaigc.policy.fleet import scenario_from_resources
from edgeaigc.policy.scenario import DemandConfig, Scenario

log = logging.getLogger("edgeaigc.twin")

DEFAULT_TICK_SECONDS = 5.0


#: Memory a drawn demand trace may take. A day of 60-s slots for 4000 cameras x 50 models is 1441 x
#: 200 000 values per array, and drawing it holds about eight such arrays (12 GiB): the twin of
#: bench-operator's 1000-node fleet took half the machine before it served a slot.
TRACE_MEMORY_BYTES = 512 * 2**20
#: float64 arrays of [slots, cameras, models] alive at once while a trace is drawn (weights,
#: one-hot variants, rates, counts and their temporaries).
TRACE_ARRAYS = 8


def trace_slots_within(cameras: int, models: int, slot_seconds: float, memory_bytes: int = TRACE_MEMORY_BYTES) -> int:
    """Slots per drawn trace: a simulated day, or fewer when a day's trace would not fit ``memory_bytes``.

    Shorter traces follow one another on the same simulated clock (see ``Twin._new_trace``); each
    draws its model popularity afresh, so a large fleet's demand shifts at each new trace.
    """
    day = math.ceil(86400 / slot_seconds)
    per_slot = cameras * models * 8 * TRACE_ARRAYS
    return max(1, min(day, memory_bytes // max(per_slot, 1)))


class Twin:
    """Plays the gateways of one PlacementPolicy's fleet, one slot per :meth:`step`.

    Args:
        source: where to read the fleet and the placement.
        namespace: the fleet's namespace.
        policy: the PlacementPolicy's name (None: the namespace's only one).
        seed: seeds the demand trace and the request counts.
        tick_seconds: real seconds per tick (requests per tick = rate x tick_seconds).
        trace_slots: slots per drawn trace (None: one simulated day, or fewer for a fleet whose day would
            not fit :data:`TRACE_MEMORY_BYTES`); another is drawn after it, on the same clock.
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
        scenario = self.scenario
        slots = self.trace_slots or trace_slots_within(scenario.num_cameras, scenario.num_models, scenario.slot_seconds)
        # A trace after the first carries on the simulated clock where the last one ended (its slot 0,
        # the warm-up slot that is never served, at the hour of the last slot served).
        start_hour = None if self.trace is None else float(self.trace.hour_of_day[-1])
        self.trace = DemandGenerator(scenario).episode(self.rng, num_slots=slots, start_hour=start_hour)
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
