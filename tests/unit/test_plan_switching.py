"""The plan's switching cost: a move is made only when its predicted gain repays it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_for_cache, is_feasible, plan_for, select_cache, stable_cache
from edgeaigc.policy.scenario import load_scenario
from edgeaigc.policy.system_model import Plan, node_cache_objective, switching_cost

SCENARIO = load_scenario("tiny")  # 2 nodes, storage 12 MB; sizes 3.7, 3.7, 6, 9, 1, 1 MB
E, M, U = SCENARIO.num_nodes, SCENARIO.num_models, SCENARIO.num_cameras
CLS_SMALL, CLS_LARGE = 2, 3  # 6 + 9 MB: only one of them fits a node


def node_rates(rates: dict[int, float], node: int = 0) -> np.ndarray:
    out = np.zeros((E, M))
    for model, rate in rates.items():
        out[node, model] = rate
    return out


def cache_of(*models: int, node: int = 0) -> np.ndarray:
    out = np.zeros((E, M))
    out[node, list(models)] = 1.0
    return out


def score_for(cache: np.ndarray) -> np.ndarray:
    return np.where(cache > 0, 1.0, -1.0)


def stable(proposed: np.ndarray, previous: np.ndarray, rates: np.ndarray, horizon: float = 10.0) -> np.ndarray:
    return stable_cache(SCENARIO, score_for(proposed), proposed, previous, rates, horizon)


def test_a_proposal_flip_flopping_between_two_models_moves_the_cache_at_most_once() -> None:
    # Steady demand for both classifiers; the scores alternate between them every slot (what
    # an actor near a tie does). Taken as they are, every slot would be a download.
    rates = node_rates({CLS_SMALL: 20.0, CLS_LARGE: 20.0})
    small, large = cache_of(CLS_SMALL), cache_of(CLS_LARGE)
    cache, moves = small, 0
    for slot in range(10):
        new = stable(large if slot % 2 == 0 else small, cache, rates)
        moves += int((new != cache).any())
        cache = new
    assert moves <= 1


def test_a_move_whose_gain_repays_the_download_is_made_and_one_that_does_not_is_not() -> None:
    # cls-large now has most of the demand: swapping cls-small for it pays off over a few slots.
    rates = node_rates({CLS_SMALL: 2.0, CLS_LARGE: 50.0})
    previous, proposed = cache_of(CLS_SMALL), cache_of(CLS_LARGE)
    np.testing.assert_array_equal(stable(proposed, previous, rates, horizon=10), proposed)
    # The same gain over a tiny horizon does not repay the download: the cache stays.
    objective = node_cache_objective(SCENARIO, np.stack([previous, proposed]), rates, rates.sum())
    gain = objective[0] - objective[1]
    cost = switching_cost(SCENARIO, proposed, previous, gain, rates.sum())
    assert gain[0] > 0 and cost[0] > 0
    short = 0.5 * cost[0] / gain[0]
    np.testing.assert_array_equal(stable(proposed, previous, rates, horizon=short), previous)


def test_a_model_without_demand_is_evicted_and_one_serving_demand_is_kept() -> None:
    rates = node_rates({CLS_SMALL: 20.0})
    previous = cache_of(CLS_SMALL, 4, 5)  # flow models have no demand
    np.testing.assert_array_equal(stable(np.zeros((E, M)), previous, rates), cache_of(CLS_SMALL))


def test_without_a_horizon_the_plan_takes_the_scores_cache_as_it_is() -> None:
    rng = np.random.default_rng(0)
    rates = rng.uniform(0, 5, (U, M))
    observation = Observation(rates, rates, np.full(U, 4.0), cache_of(CLS_SMALL), np.zeros(E), 12.0)
    wanted = cache_of(CLS_LARGE, 0)
    plan = plan_for(SCENARIO, observation, action_for_cache(SCENARIO, wanted), switching_horizon_slots=0)
    np.testing.assert_array_equal(plan.cache, select_cache(SCENARIO, score_for(wanted), observation.cache))


@settings(max_examples=60, deadline=None)
@given(
    scores=arrays(np.float64, (E, M), elements=st.floats(-1, 1)),
    previous=arrays(np.float64, (E, M), elements=st.sampled_from([0.0, 1.0])),
    rates=arrays(np.float64, (E, M), elements=st.one_of(st.just(0.0), st.floats(1e-6, 50))),
    horizon=st.floats(0.01, 1000),
)
def test_the_stable_cache_fits_and_holds_only_models_it_had_or_was_asked_for(
    scores: np.ndarray, previous: np.ndarray, rates: np.ndarray, horizon: float
) -> None:
    proposed = select_cache(SCENARIO, scores, previous)
    cache = stable_cache(SCENARIO, scores, proposed, previous, rates, horizon)
    assert ((cache * SCENARIO.model_size_mb).sum(axis=1) <= SCENARIO.node_storage_mb + 1e-9).all()
    assert ((cache == 0) | (proposed > 0) | (previous > 0)).all()
    shares = np.where(cache > 0, 1.0 / np.maximum(cache.sum(axis=1, keepdims=True), 1), 0.0)
    bandwidth = np.full(U, 1.0 / np.bincount(SCENARIO.camera_node, minlength=E)[SCENARIO.camera_node])
    assert is_feasible(SCENARIO, Plan(cache, shares, bandwidth))


def test_a_fleets_stable_cache_is_each_nodes_own_and_for_nodes_keeps_their_objective() -> None:
    """Nodes are independent (no sites here): the plan evaluates only the nodes trying a move, and
    must get what each node alone gets."""
    city = load_scenario("traffic-city")
    rng = np.random.default_rng(4)
    nodes, models = city.num_nodes, city.num_models
    everything = np.arange(models)
    for _ in range(6):
        scores = rng.uniform(-1, 1, (nodes, models))
        proposed = select_cache(city, scores, np.zeros((nodes, models)))
        previous = select_cache(city, rng.uniform(-1, 1, (nodes, models)), np.zeros((nodes, models)))
        rates = rng.exponential(2.0, (nodes, models)) * (rng.random((nodes, models)) < 0.6)
        fleet = stable_cache(city, scores, proposed, previous, rates, 10.0)
        for e in range(nodes):
            alone = city.for_node(e, everything)
            row = slice(e, e + 1)
            own = stable_cache(alone, scores[row], proposed[row], previous[row], rates[row], 10.0)
            np.testing.assert_array_equal(fleet[e], own[0])
        some = np.array([3, 1])
        part = city.for_nodes(some)
        assert part.node_names == (city.node_names[3], city.node_names[1])
        assert [part.node_names[i] for i in part.camera_node] == [
            city.node_names[city.camera_node[u]] for u in np.flatnonzero(np.isin(city.camera_node, some))
        ]
        total = float(rates.sum())
        np.testing.assert_array_equal(
            node_cache_objective(part, previous[some], rates[some], total),
            node_cache_objective(city, previous, rates, total)[some],
        )
