"""Every action, whatever it is, becomes a feasible plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.plan import action_for_cache, action_size, is_feasible, plan_for, select_cache

ENV = EdgePlacementEnv("tiny")
ENV.reset(seed=3)
SIZE = action_size(ENV.scenario)


@settings(max_examples=80, deadline=None)
@given(
    action=arrays(
        np.float64, SIZE, elements=st.one_of(st.floats(-5, 5), st.just(np.nan), st.just(np.inf), st.just(-np.inf))
    ),
    churn=st.one_of(st.none(), st.integers(0, 3)),
)
def test_any_action_projects_to_a_feasible_plan(action: np.ndarray, churn: int | None) -> None:
    assert ENV.observation is not None
    plan = plan_for(ENV.scenario, ENV.observation, action, churn)
    assert is_feasible(ENV.scenario, plan)
    assert np.isclose(plan.compute_share.sum(axis=1), np.where(plan.cache.sum(axis=1) > 0, 1.0, 0.0)).all()


def test_wrong_action_length_is_a_clear_error() -> None:
    assert ENV.observation is not None
    with pytest.raises(ValueError, match="expected 2\\*E\\*M\\+U"):
        plan_for(ENV.scenario, ENV.observation, np.zeros(SIZE + 1))


def test_greedy_knapsack_takes_best_scores_that_fit() -> None:
    scenario = ENV.scenario  # storage 12 MB; sizes 3.7, 3.7, 6, 9, 1, 1
    score = np.array([[0.1, -1, 0.9, 0.8, 0.5, 0.2], [-1, -1, -1, -1, -1, -1]])
    cache = select_cache(scenario, score, np.zeros((2, 6)))
    # 6 (cls-small) then 9 does not fit, then 1 + 1, then 3.7 does fit (6+1+1+3.7 = 11.7).
    np.testing.assert_array_equal(cache[0], [1, 0, 1, 0, 1, 1])
    assert cache[1].sum() == 0


def test_churn_limit_bounds_new_models_but_keeps_cached_ones() -> None:
    scenario = ENV.scenario
    previous = np.zeros((2, 6))
    previous[0, 4] = 1
    cache = select_cache(scenario, np.ones((2, 6)), previous, churn_limit=1)
    assert cache[0, 4] == 1
    assert ((cache > 0) & (previous == 0)).sum(axis=1).max() <= 1


def test_action_for_cache_round_trips() -> None:
    assert ENV.observation is not None
    wanted = np.zeros((2, 6))
    wanted[0, [0, 2]] = 1
    wanted[1, [3]] = 1
    plan = plan_for(ENV.scenario, ENV.observation, action_for_cache(ENV.scenario, wanted))
    np.testing.assert_array_equal(plan.cache, wanted)
