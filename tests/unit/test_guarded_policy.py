"""A learned policy behind the guard in the simulator (policy/guarded.py) and its rows in the held-out suite."""

from __future__ import annotations

import numpy as np
import pytest

from edgeaigc.policy.benchmark import online_policy, run_online_episode
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.guard import GuardSettings
from edgeaigc.policy.guarded import GuardedPolicy
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_size
from edgeaigc.policy.scenario import Scenario, load_scenario
from edgeaigc.policy.suite import GUARDED, markdown, scenario_row, summary


class CachesNothing:
    """A deliberately bad learned policy: every cache score -1, shares as measured."""

    name = "td3"

    def __init__(self) -> None:
        self.scenario: Scenario | None = None
        self.resets = 0

    def reset(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.resets += 1

    def act(self, observation: Observation) -> np.ndarray:
        assert self.scenario is not None
        action = np.zeros(action_size(self.scenario), np.float32)
        action[: self.scenario.num_nodes * self.scenario.num_models] = -1.0
        return action


@pytest.fixture(scope="module")
def city() -> Scenario:
    return load_scenario("traffic-city").with_overrides(episode_slots=48)


def test_the_guard_takes_control_from_a_losing_actor_and_the_episode_scores_what_it_ran(city: Scenario) -> None:
    env = EdgePlacementEnv(city)
    alone = run_online_episode(env, CachesNothing(), seed=1000).metrics
    guarded_policy = GuardedPolicy(CachesNothing(), GuardSettings(window_intervals=3, min_dwell_intervals=3))
    guarded = run_online_episode(env, guarded_policy, seed=1000).metrics
    lru = run_online_episode(env, online_policy("lru", city)[0], seed=1000).metrics
    assert alone["hit_rate"] == 0.0
    # A heuristic placed the models for most of the episode, and the objective shows it.
    in_control = guarded_policy.slots_in_control
    assert sum(in_control.values()) == city.episode_slots
    assert in_control["td3"] < city.episode_slots / 4
    assert guarded_policy.switches >= 1
    assert guarded["hit_rate"] > 0.3
    assert guarded["objective"] < alone["objective"] * 0.8
    # Within reach of LRU, one of the candidates: the window and the dwell cost it the first slots.
    assert guarded["objective"] < lru["objective"] * 1.25


def test_each_episode_starts_a_fresh_guard_so_episodes_repeat(city: Scenario) -> None:
    env = EdgePlacementEnv(city)
    learned = CachesNothing()
    policy = GuardedPolicy(learned, GuardSettings(window_intervals=3, min_dwell_intervals=3))
    first = run_online_episode(env, policy, seed=1001).metrics
    second = run_online_episode(env, policy, seed=1001).metrics
    assert learned.resets == 2
    assert first == second


def test_a_guarded_name_is_the_learned_policy_behind_the_guard_with_the_envs_planning(city: Scenario) -> None:
    env = EdgePlacementEnv(city, churn_limit=3, switching_horizon_slots=10.0)
    policy, note = online_policy("general+guard", city, env=env)
    assert isinstance(policy, GuardedPolicy)
    assert policy.name == "general+guard" and policy.learned.name == "general"
    assert (policy.churn_limit, policy.switching_horizon_slots) == (3, 10.0)
    assert "general actor" in note and "guard" in note


def _document(name: str, objectives: dict[str, float]) -> dict[str, object]:
    return {
        "scenario": name,
        "fleet": {"nodes": 2, "models": 3, "cameras": 4},
        "policies": {
            policy: {"objective": {"mean": value, "ci95": 0.0}, "hit_rate": {"mean": 0.5, "ci95": 0.0}}
            for policy, value in objectives.items()
        },
    }


def test_suite_rows_report_the_guarded_actor_beside_the_actor_alone() -> None:
    heuristics = {"lru": 1.0, "lfu": 1.2, "static_topk": 1.5, "myopic": 1.1}
    rows = [
        scenario_row("family", _document("w0", {**heuristics, "general": 1.3, GUARDED: 1.02, "oracle": 0.9})),
        scenario_row("family", _document("w1", {**heuristics, "general": 0.95, GUARDED: 0.97, "oracle": 0.9})),
        # A results.json of a run without the guarded policy.
        scenario_row("family", _document("w2", {**heuristics, "general": 0.99, "oracle": 0.9})),
    ]
    assert rows[0]["guarded_vs_best"] == pytest.approx(0.02) and rows[0]["guarded_at_most_best"] is False
    assert rows[1]["guarded_at_most_best"] is True
    assert rows[2]["guarded_objective"] is None and rows[2]["guarded_at_most_best"] is None
    totals = summary(rows)
    guarded = totals["family"]["guarded"]
    assert guarded["scenarios"] == 2 and guarded["at_most_best_heuristic"] == 1
    assert guarded["mean_vs_best"] == pytest.approx((0.02 - 0.03) / 2)
    assert guarded["max_vs_best"] == pytest.approx(0.02)
    # The targets stay the actor's own: w0's actor alone is 30 % behind LRU.
    assert totals["family"]["at_most_best_heuristic"] == 2
    text = markdown(rows, totals, [1000])
    assert "| +2.0% ✗ |" in text and "| -3.0% ✓ |" in text
    assert "general+guard (what the operator runs): <= best heuristic on 1/2" in text
