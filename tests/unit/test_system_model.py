"""The system model against figures computed by hand, and the optimality of the shares."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeaigc.policy import system_model as sm
from edgeaigc.policy.scenario import Scenario

TWO_REQUESTS_PER_SECOND = np.array([[2.0, 0.0, 0.0]])  # camera 0 asks the detector twice a second


def test_queue_population_processor_sharing_and_linear_extension() -> None:
    # PS region: N = a / (s - a) = 0.25 / 0.25.
    assert sm.queue_population(0.5, 0.25, 0.95) == pytest.approx(1.0)
    # Beyond rho_max: tangent at the knee s0 = a / 0.95: 19 + 722 * (s0 - s) = 38.
    assert sm.queue_population(0.5, 0.5, 0.95) == pytest.approx(38.0)
    # No load, no queue; and a starved loaded queue is finite, not infinite.
    assert sm.queue_population(0.0, 0.0, 0.95) == 0.0
    assert np.isfinite(sm.queue_population(0.0, 0.3, 0.95))


def test_square_root_rule_when_nothing_is_overloaded() -> None:
    # sqrt(nu) = (sqrt(.1) + sqrt(.4)) / (1 - .5); s_i = a_i + sqrt(a_i / nu) = 4/15 and 11/15.
    shares = sm.optimal_shares(np.array([0.1, 0.4]), np.array([0, 0]), 1, 0.95)
    np.testing.assert_allclose(shares, [4 / 15, 11 / 15], rtol=1e-9)


def test_queues_without_load_get_no_share() -> None:
    shares = sm.optimal_shares(np.array([0.0, 0.3, 0.0]), np.array([0, 0, 1]), 2, 0.95)
    np.testing.assert_allclose(shares, [0.0, 1.0, 0.0])


@settings(max_examples=100, deadline=None)
@given(
    needed=st.lists(st.floats(0.0, 1.5), min_size=1, max_size=5),
    other=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
)
def test_water_filling_beats_any_other_feasible_split(needed: list[float], other: list[float]) -> None:
    a = np.array(needed)
    group = np.zeros(len(a), dtype=np.int64)
    best = sm.optimal_shares(a, group, 1, 0.95)
    assert best.sum() <= 1 + 1e-9 and np.all(best >= 0)
    alternative = np.array(other[: len(a)]) + 1e-9
    alternative = alternative / alternative.sum()
    optimum = sm.queue_population(best, a, 0.95).sum()
    assert optimum <= sm.queue_population(alternative, a, 0.95).sum() + 1e-6 * max(1.0, optimum)


def _plan(cache: float, compute: float, bandwidth: float = 1.0) -> sm.Plan:
    return sm.Plan(
        cache=np.array([[cache, 0.0, 0.0]]),
        compute_share=np.array([[compute, 0.0, 0.0]]),
        bandwidth_share=np.array([bandwidth]),
    )


def test_hit_by_hand(hand_scenario: Scenario) -> None:
    outcome = sm.evaluate_slot(hand_scenario, _plan(1, 0.5), TWO_REQUESTS_PER_SECOND, np.array([1.0]), np.zeros((1, 3)))
    # upload 1 Mbit over 10 Mbit/s carrying 2 Mbit/s: 1/(10-2) = 0.125 s;
    # compute 0.1 core-s on 0.5 core carrying 0.2: 0.1/(0.5-0.2) = 0.3333 s.
    assert outcome.mean_response_time_s == pytest.approx(0.125 + 0.1 / 0.3)
    assert outcome.requests == pytest.approx(120)
    assert outcome.hit_rate == 1.0
    # energy 0.1 s x 1e-6 $/s x 120 requests, plus downloading 10 MB at $1/GB.
    assert outcome.edge_energy_cost == pytest.approx(120 * 0.1 * 1e-6)
    assert outcome.download_cost == pytest.approx(0.01)
    assert outcome.cost == pytest.approx(120 * 0.1 * 1e-6 + 0.01)
    assert outcome.downloads == 1
    # Every request (0.458 s) is slower than the 0.4 s SLO.
    assert outcome.slo_violations == pytest.approx(120)


def test_miss_by_hand(hand_scenario: Scenario) -> None:
    outcome = sm.evaluate_slot(hand_scenario, _plan(0, 0.0), TWO_REQUESTS_PER_SECOND, np.array([1.0]), np.zeros((1, 3)))
    # upload 0.125 s + backhaul 1/(10-2) = 0.125 s + RTT 0.05 s + cloud compute 0.1/2 = 0.05 s.
    assert outcome.mean_response_time_s == pytest.approx(0.35)
    assert outcome.hit_rate == 0.0
    # Per request: cloud 0.05 core-s x 1e-4 $ + 1 Mbit = 1/8000 GB x $0.1.
    per_request = 0.05 * 1e-4 + 0.1 / 8000
    assert outcome.cost == pytest.approx(120 * per_request)
    # reward = -(0.35 / 0.1 + per_request / 1e-5)
    assert outcome.reward == pytest.approx(-(3.5 + per_request / 1e-5))
    assert outcome.slo_violations == 0


def test_keeping_a_cached_model_costs_no_download(hand_scenario: Scenario) -> None:
    outcome = sm.evaluate_slot(
        hand_scenario, _plan(1, 0.5), TWO_REQUESTS_PER_SECOND, np.array([1.0]), np.array([[1.0, 0.0, 0.0]])
    )
    assert outcome.downloads == 0 and outcome.download_cost == 0.0


def test_starved_share_is_slow_but_finite(hand_scenario: Scenario) -> None:
    outcome = sm.evaluate_slot(hand_scenario, _plan(1, 0.0), TWO_REQUESTS_PER_SECOND, np.array([1.0]), np.zeros((1, 3)))
    assert 1.0 < outcome.mean_response_time_s < 1e4


def test_histogram_quantile_matches_the_response_time(hand_scenario: Scenario) -> None:
    outcome = sm.evaluate_slot(hand_scenario, _plan(0, 0.0), TWO_REQUESTS_PER_SECOND, np.array([1.0]), np.zeros((1, 3)))
    assert sm.histogram_quantile(outcome.response_time_histogram, 0.95) == pytest.approx(0.35, rel=0.02)


def test_node_objective_plus_uplink_and_downloads_equals_the_reward(hand_scenario: Scenario) -> None:
    """The decomposition that the myopic optimizer and the oracle rely on."""
    rates = np.array([[2.0, 3.0, 0.5]])
    link = np.array([1.0])
    cache = np.array([[0.0, 1.0, 1.0]])
    node_rates = sm.node_rates_of(hand_scenario, rates)
    plan = sm.Plan(
        cache=cache,
        compute_share=sm.optimal_compute_shares(hand_scenario, cache, node_rates),
        bandwidth_share=sm.optimal_bandwidth_shares(hand_scenario, rates, link),
    )
    outcome = sm.evaluate_slot(hand_scenario, plan, rates, link, np.zeros((1, 3)))
    total = float(node_rates.sum())
    w_time, w_cost = sm.objective_weights(hand_scenario, total)
    uplink = sm.queue_population(plan.bandwidth_share, sm.upload_needed(hand_scenario, rates, link), 0.95).sum()
    decomposed = (
        sm.node_cache_objective(hand_scenario, cache, node_rates, total).sum()
        + w_time * uplink
        + w_cost * sm.download_cost(hand_scenario, cache, np.zeros((1, 3))).sum()
    )
    assert -outcome.reward == pytest.approx(float(decomposed), rel=1e-9)
