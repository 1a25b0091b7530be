"""One slot served under a placement (pure): per-request response times and the system model's outcome."""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import (
    Plan,
    SlotOutcome,
    evaluate_slot,
    node_rates_of,
    node_serving,
    seconds_per_work,
    upload_needed,
)


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
