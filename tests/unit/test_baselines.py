"""Non-learned policies: the action contract, classic cache behaviour, and the myopic optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.baselines import LFUPolicy, LRUPolicy, RandomPolicy, StaticTopKPolicy
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.myopic import (
    MyopicPolicy,
    NodeSlot,
    TooManySubsets,
    cost_weight,
    feasible_subsets,
    local_search,
    myopic_cache,
    single_node_scenario,
)
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_size, is_feasible, plan_for
from edgeaigc.policy.scenario import Scenario, scenario_from_dict
from edgeaigc.policy.system_model import download_cost, node_cache_objective, node_rates_of
from tests.conftest import one_node_document

ONLINE = (RandomPolicy, LRUPolicy, LFUPolicy, StaticTopKPolicy, MyopicPolicy)


def two_model_scenario() -> Scenario:
    """One node with room for one of two 6 MB detectors (a third model is never requested)."""
    models = [
        {"name": "det-a", "stage": "detection", "size_mb": 6, "work_ms": 50, "input_kb": 60, "output_kb": 1},
        {"name": "det-b", "stage": "detection", "size_mb": 6, "work_ms": 50, "input_kb": 60, "output_kb": 1},
        {"name": "cls", "stage": "classification", "size_mb": 6, "work_ms": 5, "input_kb": 8, "output_kb": 0},
        {"name": "flow", "stage": "flow", "size_mb": 6, "work_ms": 1, "input_kb": 1, "output_kb": 0},
    ]
    return scenario_from_dict(one_node_document(models=models))


def observation(rates: list[float], cache: list[float]) -> Observation:
    """What one camera measured (``rates`` per model) with ``cache`` on the single node."""
    camera_rates = np.array([rates], dtype=float)
    return Observation(
        camera_rates=camera_rates,
        camera_rates_recent_mean=camera_rates,
        link_quality=np.ones(1),
        cache=np.array([cache], dtype=float),
        node_compute_utilisation=np.zeros(1),
        hour_of_day=12.0,
    )


def decide(policy: PlacementPolicy, scenario: Scenario, rates: list[float], cache: list[float]) -> list[float]:
    """The cache the policy's action becomes on the node."""
    obs = observation(rates, cache)
    return plan_for(scenario, obs, policy.act(obs)).cache[0].tolist()


@pytest.mark.parametrize("policy_class", ONLINE)
def test_actions_are_in_range_and_plans_feasible_over_a_tiny_episode(policy_class: type) -> None:
    env = EdgePlacementEnv("tiny", episode_slots=15)
    policy = policy_class()
    assert isinstance(policy, PlacementPolicy)
    env.reset(seed=5)
    policy.reset(env.scenario, 5)
    truncated = False
    while not truncated:
        assert env.observation is not None
        action = policy.act(env.observation)
        assert action.shape == (action_size(env.scenario),)
        assert np.all((action >= -1) & (action <= 1))
        _, _, _, truncated, _ = env.step(action)
        assert env.last_plan is not None and is_feasible(env.scenario, env.last_plan)


def test_random_is_reproducible_per_seed() -> None:
    scenario = EdgePlacementEnv("tiny").scenario
    obs = observation([0.0] * scenario.num_models, [0.0] * scenario.num_models)
    first, second = RandomPolicy(), RandomPolicy()
    first.reset(scenario, 7)
    second.reset(scenario, 7)
    np.testing.assert_array_equal(first.act(obs), second.act(obs))
    second.reset(scenario, 8)
    assert not np.array_equal(first.act(obs), second.act(obs))


def test_lru_caches_the_most_recently_requested_model() -> None:
    scenario = two_model_scenario()
    lru = LRUPolicy()
    lru.reset(scenario, 0)
    # A is requested a lot, then B a little: recency, not frequency, decides.
    assert decide(lru, scenario, [5.0, 0, 0, 0], [0, 0, 0, 0]) == [1, 0, 0, 0]
    assert decide(lru, scenario, [0, 0.1, 0, 0], [1, 0, 0, 0]) == [0, 1, 0, 0]
    # Nothing requested: nothing to insert, the cache stays.
    assert decide(lru, scenario, [0, 0, 0, 0], [0, 1, 0, 0]) == [0, 1, 0, 0]
    # Both requested in one slot: models used in the same slot do not evict one another...
    assert decide(lru, scenario, [2.0, 0.5, 0, 0], [0, 1, 0, 0]) == [0, 1, 0, 0]
    # ... and from an empty node the busier one gets the single place.
    assert decide(lru, scenario, [0.5, 2.0, 0, 0], [0, 0, 0, 0]) == [0, 1, 0, 0]
    assert decide(lru, scenario, [0, 0, 0, 0], [0, 1, 0, 0]) == [0, 1, 0, 0]
    assert decide(lru, scenario, [1.0, 0, 0, 0], [0, 1, 0, 0]) == [1, 0, 0, 0]


def test_lfu_caches_the_most_frequently_requested_model() -> None:
    scenario = two_model_scenario()
    lfu = LFUPolicy()
    lfu.reset(scenario, 0)
    assert decide(lfu, scenario, [5.0, 0, 0, 0], [0, 0, 0, 0]) == [1, 0, 0, 0]
    # B's one slot (0.1/s) does not outweigh A's (5/s): A stays although B is more recent.
    assert decide(lfu, scenario, [0, 0.1, 0, 0], [1, 0, 0, 0]) == [1, 0, 0, 0]
    # B's cumulative count overtakes A's: B replaces it.
    assert decide(lfu, scenario, [0, 6.0, 0, 0], [1, 0, 0, 0]) == [0, 1, 0, 0]


def test_models_larger_than_the_node_are_never_cached() -> None:
    models = [
        {"name": "huge", "stage": "detection", "size_mb": 50, "work_ms": 50, "input_kb": 60, "output_kb": 1},
        {"name": "cls", "stage": "classification", "size_mb": 6, "work_ms": 5, "input_kb": 8, "output_kb": 0},
        {"name": "flow", "stage": "flow", "size_mb": 1, "work_ms": 1, "input_kb": 1, "output_kb": 0},
    ]
    scenario = scenario_from_dict(one_node_document(models=models))
    for policy in (LRUPolicy(), LFUPolicy()):
        policy.reset(scenario, 0)
        assert decide(policy, scenario, [9.0, 1.0, 0], [0, 0, 0]) == [0, 1, 0]


def test_static_topk_caches_the_fleet_favourites_and_never_changes() -> None:
    env = EdgePlacementEnv("tiny", episode_slots=20)
    policy = StaticTopKPolicy()
    env.reset(seed=2)
    policy.reset(env.scenario, 2)
    assert env.observation is not None
    favourite = int(np.argmax(env.observation.camera_rates.sum(axis=0)))
    caches = []
    truncated = False
    while not truncated:
        assert env.observation is not None
        _, _, _, truncated, _ = env.step(policy.act(env.observation))
        caches.append(env.cache.copy())
    assert np.all(caches[0][:, favourite] == 1)
    for cache in caches[1:]:
        np.testing.assert_array_equal(cache, caches[0])


def brute_force_subsets(sizes: np.ndarray, capacity: float, candidates: np.ndarray) -> set[tuple[bool, ...]]:
    found = set()
    members = np.flatnonzero(candidates)
    for count in range(members.size + 1):
        for chosen in itertools.combinations(members, count):
            if sizes[list(chosen)].sum() <= capacity:
                row = np.zeros(sizes.size, dtype=bool)
                row[list(chosen)] = True
                found.add(tuple(row.tolist()))
    return found


@pytest.mark.parametrize("seed", range(5))
def test_feasible_subsets_are_exactly_the_subsets_that_fit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.uniform(0.5, 6.0, 9)
    candidates = rng.random(9) < 0.8
    rows = feasible_subsets(sizes, 10.0, candidates)
    assert len({tuple(row.tolist()) for row in rows}) == len(rows)  # no duplicates
    assert {tuple(row.tolist()) for row in rows} == brute_force_subsets(sizes, 10.0, candidates)
    assert not rows[0].any()
    with pytest.raises(TooManySubsets):
        feasible_subsets(sizes, 10.0, candidates, limit=len(rows) - 1)


def test_single_node_scenario_gives_the_same_node_objective() -> None:
    env = EdgePlacementEnv("traffic-city")
    env.reset(seed=1)
    assert env.observation is not None
    scenario = env.scenario
    node_rates = node_rates_of(scenario, env.observation.camera_rates)
    rng = np.random.default_rng(0)
    caches = (rng.random((8, scenario.num_nodes, scenario.num_models)) < 0.3).astype(float)
    full = node_cache_objective(scenario, caches, node_rates, node_rates.sum())
    for node in range(scenario.num_nodes):
        models = np.flatnonzero((node_rates[node] > 0) | caches[:, node].any(axis=0))
        part = single_node_scenario(scenario, node, models)
        cut = node_cache_objective(
            part, caches[:, node, models][:, None], node_rates[node, models][None], node_rates.sum()
        )
        np.testing.assert_allclose(cut[:, 0], full[:, node], rtol=1e-12)


def one_slot_objective(scenario: Scenario, obs: Observation, caches: np.ndarray) -> np.ndarray:
    """Objective ``[B, E]`` of fleet caches ``[B, E, M]`` if the measured demand repeats."""
    node_rates = node_rates_of(scenario, obs.camera_rates)
    total = float(node_rates.sum())
    serving = node_cache_objective(scenario, caches, node_rates, total)
    return serving + cost_weight(scenario, total) * download_cost(scenario, caches, obs.cache)


def tiny_observations(slots: int) -> tuple[Scenario, list[Observation]]:
    """Observations along a tiny episode, with LRU choosing caches so they vary."""
    env = EdgePlacementEnv("tiny")
    env.reset(seed=4)
    lru = LRUPolicy()
    lru.reset(env.scenario, 4)
    seen = []
    for _ in range(slots):
        assert env.observation is not None
        seen.append(env.observation)
        env.step(lru.act(env.observation))
    return env.scenario, seen


@pytest.mark.parametrize("download_price", [2.0, 0.05])
def test_myopic_enumeration_matches_brute_force_over_every_cache(download_price: float) -> None:
    scenario, seen = tiny_observations(6)
    # At tiny's own price one slot's savings rarely pay a download; at a low one they do.
    scenario = scenario.with_overrides(download_price_per_gb=download_price)
    chose_downloads = False
    M = scenario.num_models
    every = np.array(list(itertools.product([0.0, 1.0], repeat=M)))  # all 2**M caches
    for obs in seen:
        chosen = myopic_cache(scenario, obs.camera_rates, obs.cache)
        chosen_value = one_slot_objective(scenario, obs, chosen[None])[0]
        chose_downloads |= bool(((chosen > 0) & (obs.cache == 0)).any())
        for node in range(scenario.num_nodes):
            fits = every @ scenario.model_size_mb <= scenario.node_storage_mb[node]
            caches = np.zeros((int(fits.sum()), scenario.num_nodes, M))
            caches[:, node] = every[fits]
            values = one_slot_objective(scenario, obs, caches)[:, node]
            # No feasible cache does better than the chosen one, and it is one of them.
            assert chosen_value[node] <= values.min() * (1 + 1e-12) + 1e-12
            assert chosen[node] @ scenario.model_size_mb <= scenario.node_storage_mb[node]
    assert chose_downloads == (download_price < 1.0)


def test_myopic_plan_keeps_its_cache() -> None:
    scenario, seen = tiny_observations(4)
    policy = MyopicPolicy()
    policy.reset(scenario, 0)
    for obs in seen:
        wanted = myopic_cache(scenario, obs.camera_rates, obs.cache)
        np.testing.assert_array_equal(plan_for(scenario, obs, policy.act(obs)).cache, wanted)


def test_local_search_improves_on_keeping_the_cache_and_on_the_empty_cache() -> None:
    scenario, seen = tiny_observations(8)
    for obs in seen:
        node_rates = node_rates_of(scenario, obs.camera_rates)
        for node in range(scenario.num_nodes):
            models = np.arange(scenario.num_models)
            problem = NodeSlot(
                scenario=single_node_scenario(scenario, node, models),
                node_rates=node_rates[node],
                previous_cache=obs.cache[node] > 0,
                total_rate=float(node_rates.sum()),
            )
            found = local_search(problem)
            assert problem.fits(found[None])[0]
            value = problem.objective(found[None])[0]
            start = problem.objective(np.stack([problem.previous_cache, np.zeros(models.size, dtype=bool)]))
            assert value <= start.min() * (1 + 1e-12)
            # On a node this small the exact optimum is within reach of the search.
            sizes, storage = problem.scenario.model_size_mb, problem.scenario.node_storage_mb[0]
            exact = problem.objective(feasible_subsets(sizes, storage, models >= 0)).min()
            assert value <= exact * 1.05


def test_myopic_falls_back_to_search_beyond_the_subset_limit() -> None:
    scenario, seen = tiny_observations(3)
    obs = seen[-1]
    searched = myopic_cache(scenario, obs.camera_rates, obs.cache, max_subsets=1)
    exact = myopic_cache(scenario, obs.camera_rates, obs.cache)
    for cache in (searched, exact):
        assert np.all(cache @ scenario.model_size_mb <= scenario.node_storage_mb)
    values = one_slot_objective(scenario, obs, np.stack([searched, exact]))
    assert np.all(values[1] <= values[0] * (1 + 1e-12))
