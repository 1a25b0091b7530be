"""Benchmark figures: confidence intervals and the hit-rate ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from edgeaigc.policy.baselines import LFUPolicy, LRUPolicy
from edgeaigc.policy.benchmark import hit_rate_ceiling, run_online_episode, run_oracle_episode, summarise
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.scenario import scenario_from_dict
from tests.conftest import one_node_document


def test_confidence_interval_is_student_t() -> None:
    # mean 2, sample sd 1, n = 4: half-width t(0.975, 3) * 1 / 2 = 3.182 / 2.
    figures = summarise([1.0, 2.0, 3.0, 2.0])
    assert figures["mean"] == pytest.approx(2.0)
    assert figures["ci95"] == pytest.approx(3.1824 * np.std([1, 2, 3, 2], ddof=1) / 2, rel=1e-3)
    assert summarise([5.0]) == {"mean": 5.0, "ci95": 0.0}


def test_ceiling_by_hand() -> None:
    # Storage 10 holds det (10) or cls (5) + flow (1), not both: each slot takes the larger side.
    scenario = scenario_from_dict(one_node_document())
    counts = np.array([[[6.0, 3.0, 1.0]], [[1.0, 3.0, 1.0]]])  # [T=2, U=1, M=3]
    # slot 1: det 6 vs cls+flow 4 -> 6 of 10; slot 2: det 1 vs 4 -> 4 of 5.
    assert hit_rate_ceiling(scenario, counts) == pytest.approx((6 + 4) / 15)


def test_no_policy_beats_the_ceiling() -> None:
    env = EdgePlacementEnv("tiny")
    for seed in (1000, 1001):
        env.reset(seed=seed)
        assert env.trace is not None
        ceiling = hit_rate_ceiling(env.scenario, env.trace.counts[1:])
        assert ceiling is not None
        results = [run_online_episode(env, LRUPolicy(), seed), run_online_episode(env, LFUPolicy(), seed)]
        results.append(run_oracle_episode(env, seed))
        assert all(r.metrics["hit_rate"] <= ceiling + 1e-9 for r in results)
