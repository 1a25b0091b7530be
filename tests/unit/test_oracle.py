"""The clairvoyant oracle: exact against brute force, equal to what the env charges, a lower bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeaigc.policy.baselines import LFUPolicy, LRUPolicy, RandomPolicy, StaticTopKPolicy
from edgeaigc.policy.demand import EpisodeTrace
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.myopic import MyopicPolicy
from edgeaigc.policy.oracle import (
    OraclePolicy,
    OracleSolution,
    OracleTooLarge,
    oracle_plans,
    solve_oracle,
)
from edgeaigc.policy.plan import is_feasible
from edgeaigc.policy.scenario import Scenario, scenario_from_dict
from edgeaigc.policy.system_model import (
    Plan,
    evaluate_slot,
    node_rates_of,
    optimal_bandwidth_shares,
    optimal_compute_shares,
)
from tests.conftest import one_node_document

TINY_SEED = 11


def hand_case() -> tuple[Scenario, EpisodeTrace]:
    """One node (10 MB), three models (10, 5 and 1 MB), three slots of shifting demand.

    Feasible caches: {}, {det}, {cls}, {flow}, {cls, flow}. Detection is busy in slots 1-2,
    classification in slot 3, so the best sequence has to weigh a second download.
    """
    scenario = scenario_from_dict(one_node_document(episode_slots=3))
    scenario = scenario.with_overrides(download_price_per_gb=0.2)
    counts = np.array(
        [
            [[1.0, 2.0, 0.0]],  # slot 0: warm-up, not decided by the oracle
            [[2.0, 1.0, 0.5]],
            [[2.5, 0.0, 0.5]],
            [[0.2, 8.0, 0.5]],
        ]
    )
    trace = EpisodeTrace(rates=counts, counts=counts, link_quality=np.full((4, 1), 2.0), hour_of_day=np.arange(4.0))
    return scenario, trace


def best_plan(scenario: Scenario, trace: EpisodeTrace, slot: int, cache: np.ndarray) -> Plan:
    node_rates = node_rates_of(scenario, trace.counts[slot])
    return Plan(
        cache=cache,
        compute_share=optimal_compute_shares(scenario, cache, node_rates),
        bandwidth_share=optimal_bandwidth_shares(scenario, trace.counts[slot], trace.link_quality[slot]),
    )


def test_dp_equals_brute_force_over_every_cache_sequence() -> None:
    scenario, trace = hand_case()
    M = scenario.num_models
    caches = [
        np.array([row], dtype=float)
        for row in itertools.product([0, 1], repeat=M)
        if np.dot(row, scenario.model_size_mb) <= scenario.node_storage_mb[0]
    ]
    totals = {}
    for sequence in itertools.product(range(len(caches)), repeat=trace.num_slots):
        previous, total = np.zeros((1, M)), 0.0
        for slot, index in enumerate(sequence, start=1):
            plan = best_plan(scenario, trace, slot, caches[index])
            outcome = evaluate_slot(scenario, plan, trace.counts[slot], trace.link_quality[slot], previous)
            total -= outcome.reward
            previous = plan.cache
        totals[sequence] = total
    best_sequence = min(totals, key=lambda sequence: totals[sequence])
    solution = solve_oracle(scenario, trace)
    assert solution.objective_bound == pytest.approx(totals[best_sequence], rel=1e-9)
    chosen = tuple(next(i for i, c in enumerate(caches) if np.array_equal(c, x)) for x in solution.caches)
    assert totals[chosen] == pytest.approx(totals[best_sequence], rel=1e-9)
    # The case is not trivial: the best sequence caches, and changes its cache.
    assert len({tuple(x.ravel()) for x in solution.caches}) > 1 and solution.caches.any()


@pytest.fixture(scope="module")
def tiny_oracle() -> tuple[EdgePlacementEnv, OracleSolution, list[float]]:
    """The oracle on a tiny episode and the ``-reward`` the env reports for its plans."""
    env = EdgePlacementEnv("tiny")
    env.reset(seed=TINY_SEED)
    assert env.trace is not None
    solution = solve_oracle(env.scenario, env.trace)
    charged = []
    for plan in oracle_plans(env.scenario, env.trace, solution):
        assert is_feasible(env.scenario, plan)
        _, reward, _, truncated, _ = env.step_plan(plan)
        charged.append(-reward)
    assert truncated and len(charged) == env.scenario.episode_slots
    return env, solution, charged


def test_bound_equals_what_the_env_charges_for_the_oracle_plans(
    tiny_oracle: tuple[EdgePlacementEnv, OracleSolution, list[float]],
) -> None:
    _, solution, charged = tiny_oracle
    assert sum(charged) == pytest.approx(solution.objective_bound, rel=1e-6)
    np.testing.assert_allclose(solution.slot_objectives, charged, rtol=1e-6)


@pytest.mark.parametrize("policy_class", [RandomPolicy, LRUPolicy, LFUPolicy, StaticTopKPolicy, MyopicPolicy])
def test_oracle_is_a_lower_bound_on_every_baseline(
    policy_class: type, tiny_oracle: tuple[EdgePlacementEnv, OracleSolution, list[float]]
) -> None:
    _, solution, _ = tiny_oracle
    env = EdgePlacementEnv("tiny")
    env.reset(seed=TINY_SEED)
    policy = policy_class()
    policy.reset(env.scenario, TINY_SEED)
    total, truncated = 0.0, False
    while not truncated:
        assert env.observation is not None
        _, reward, _, truncated, _ = env.step(policy.act(env.observation))
        total -= reward
    assert solution.objective_bound <= total * (1 + 1e-9)


def test_oracle_policy_serves_the_solution_slot_by_slot() -> None:
    env = EdgePlacementEnv("tiny", episode_slots=10)
    env.reset(seed=1)
    assert env.trace is not None
    oracle = OraclePolicy()
    oracle.reset(env.scenario, 1, env.trace)
    assert oracle.solution is not None
    total, truncated = 0.0, False
    while not truncated:
        _, reward, _, truncated, _ = env.step_plan(oracle.plan(env.slot))
        total -= reward
    assert total == pytest.approx(oracle.solution.objective_bound, rel=1e-6)
    with pytest.raises(IndexError):
        oracle.plan(0)


def test_too_many_caches_is_a_clear_error() -> None:
    env = EdgePlacementEnv("tiny", episode_slots=5)
    env.reset(seed=0)
    assert env.trace is not None
    with pytest.raises(OracleTooLarge, match=r"node pi-\d: more than 3 feasible caches"):
        solve_oracle(env.scenario, env.trace, max_subsets=3)
