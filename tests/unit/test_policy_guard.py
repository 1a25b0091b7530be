"""The counterfactual guard (policy/guard.py): hysteresis, scoring, and its tracks on simulated demand."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.baselines import LRUPolicy
from edgeaigc.policy.demand import DemandGenerator
from edgeaigc.policy.guard import GuardSettings, GuardStep, PolicyGuard, choose, window_means
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import action_size, plan_for
from edgeaigc.policy.scenario import Scenario, load_scenario
from edgeaigc.policy.system_model import node_rates_of

SETTINGS = GuardSettings(margin=0.05, window_intervals=3, min_dwell_intervals=3)


class CachesNothing:
    """A deliberately bad learned policy: every cache score -1, shares as measured."""

    name = "td3"

    def __init__(self) -> None:
        self.scenario: Scenario | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario

    def act(self, observation: Observation) -> np.ndarray:
        assert self.scenario is not None
        action = np.zeros(action_size(self.scenario), np.float32)
        action[: self.scenario.num_nodes * self.scenario.num_models] = -1.0
        return action


def _run(
    scores: Sequence[Mapping[str, float] | None], settings: GuardSettings = SETTINGS, learned: str = "td3"
) -> list[str]:
    """Who is in control after each interval, for a sequence of interval scores (None: not scored)."""
    history: list[dict[str, float]] = []
    in_control, dwell, trail = learned, 0, []
    for interval in scores:
        if interval is not None:
            history.append(dict(interval))
            dwell += 1
        choice = choose(in_control, learned, window_means(history, settings.window_intervals), settings, dwell)
        if choice.switched:
            in_control, dwell = choice.in_control, 0
        trail.append(in_control)
    return trail


def _scores(
    td3: float, lru: float = 1.0, lfu: float = 2.0, static_topk: float = 2.0, myopic: float = 2.0
) -> dict[str, float]:
    return {"td3": td3, "lru": lru, "lfu": lfu, "static_topk": static_topk, "myopic": myopic}


def test_the_window_must_fill_before_anything_switches() -> None:
    assert window_means([_scores(5.0)] * 2, 3) is None
    assert _run([_scores(5.0)] * 2) == ["td3", "td3"]
    # Third scored interval: the window is full, td3 trails lru by 400 %: lru takes over.
    assert _run([_scores(5.0)] * 3) == ["td3", "td3", "lru"]


def test_trailing_by_the_margin_or_less_never_switches_and_ties_keep_the_one_in_control() -> None:
    assert _run([_scores(1.05)] * 10) == ["td3"] * 10  # exactly 5 % behind: not more than the margin
    assert _run([_scores(1.0)] * 10) == ["td3"] * 10  # a tie
    assert _run([_scores(1.0506)] * 10)[-1] == "lru"
    # Two heuristics tied for best: the first in the candidates' order, every time.
    tied = _scores(2.0, lru=1.0, lfu=1.0)
    assert _run([tied] * 4)[-1] == "lru"
    reordered = dataclasses.replace(SETTINGS, candidates=("lfu", "lru", "static_topk", "myopic"))
    assert _run([tied] * 4, reordered)[-1] == "lfu"


def test_switching_back_needs_the_learned_policy_ahead_by_the_margin() -> None:
    behind = [_scores(2.0)] * 3
    slightly_ahead = [_scores(0.97)] * 10  # ahead of lru by 3 %: lru stays
    assert set(_run(behind + slightly_ahead)[3:]) == {"lru"}
    clearly_ahead = [_scores(0.9)] * 10
    trail = _run(behind + clearly_ahead)
    assert trail[2] == "lru" and trail[-1] == "td3"
    # The window must show it: td3 comes back once its mean over the window is 5 % better, and not
    # before the minimum dwell.
    assert trail.index("td3", 3) == 2 + SETTINGS.min_dwell_intervals


@pytest.mark.parametrize("period", [1, 2, 3, 4])
def test_leaders_that_alternate_never_make_it_flap(period: int) -> None:
    # td3 and lru trade a 30 % lead every `period` intervals, for 60 intervals.
    sequence = [_scores(0.7, lru=1.0) if (i // period) % 2 else _scores(1.0, lru=0.7) for i in range(60)]
    trail = _run(sequence)
    switches = [i for i in range(1, len(trail)) if trail[i] != trail[i - 1]]
    gaps = np.diff([-SETTINGS.min_dwell_intervals, *switches])
    assert all(gap >= SETTINGS.min_dwell_intervals for gap in gaps), (period, switches)
    # A window as long as a whole cycle averages the lead away: nobody switches at all.
    cycle = dataclasses.replace(SETTINGS, window_intervals=2 * period)
    assert set(_run(sequence, cycle)) == {"td3"}


def test_random_scores_never_switch_more_often_than_the_dwell_allows() -> None:
    rng = np.random.default_rng(0)
    names = ("td3", "lru", "lfu", "static_topk", "myopic")
    sequence = [dict(zip(names, rng.uniform(0.5, 1.5, len(names)), strict=True)) for _ in range(500)]
    trail = _run(sequence)
    switches = [i for i in range(1, len(trail)) if trail[i] != trail[i - 1]]
    assert switches, "random scores this far apart make it switch now and then"
    assert all(b - a >= SETTINGS.min_dwell_intervals for a, b in itertools.pairwise(switches))


def test_a_missing_interval_neither_counts_for_the_window_nor_for_the_dwell() -> None:
    # Two scored intervals, two missing (no metrics, no demand), then the third scored one.
    trail = _run([_scores(5.0), None, _scores(5.0), None, None, _scores(5.0)])
    assert trail == ["td3"] * 5 + ["lru"]


def test_settings_come_from_the_spec_with_the_crd_defaults() -> None:
    assert GuardSettings.from_spec({}) == GuardSettings()
    spec = {"enabled": False, "margin": 0.1, "windowIntervals": 7, "minDwellIntervals": 2, "candidates": ["lru"]}
    assert GuardSettings.from_spec(spec) == GuardSettings(False, 0.1, 7, 2, ("lru",))
    assert GuardSettings.from_spec({"switchingHorizonIntervals": 3}).switching_horizon_intervals == 3.0


def test_a_switch_is_made_only_when_its_gain_over_the_horizon_repays_moving_the_placement() -> None:
    settings = dataclasses.replace(SETTINGS, switching_horizon_intervals=20)
    means = window_means([_scores(5.0, lfu=2.0)] * 3, 3)  # lru gains 4.0 an interval, lfu 3.0
    assert means is not None
    costs = {"lru": 80.0, "lfu": 1000.0, "static_topk": 1000.0, "myopic": 1000.0}
    kept = choose("td3", "td3", means, settings, 3, costs)
    assert (kept.switched, kept.in_control, kept.reason) == (False, "td3", "SwitchNotRepaid")
    assert "lru is ahead" in kept.message and "20 intervals of the gain" in kept.message
    taken = choose("td3", "td3", means, settings, 3, {**costs, "lru": 79.0})
    assert (taken.switched, taken.in_control, taken.reason) == (True, "lru", "TrailingBaseline")
    # The best one is not worth its switch, another one ahead is: that one.
    cheaper = choose("td3", "td3", means, settings, 3, {**costs, "lru": 1000.0, "lfu": 59.0})
    assert (cheaper.switched, cheaper.in_control) == (True, "lfu")
    # Back to the learned policy at the same price: td3 gains 0.5 an interval over lru in control.
    ahead = {**_scores(0.5), "lru": 1.0}
    assert choose("lru", "td3", ahead, settings, 5, {"td3": 10.0}).reason == "SwitchNotRepaid"
    back = choose("lru", "td3", ahead, settings, 5, {"td3": 9.9})
    assert (back.switched, back.in_control, back.reason) == (True, "td3", "LearnedPolicyAhead")
    # Without prices (or at none) every switch is repaid, as before.
    assert choose("td3", "td3", means, settings, 3).in_control == "lru"


# --- the guard on simulated demand (the system model, real heuristics, no cluster) ---


def _observations(scenario: Scenario, slots: int, seed: int = 0) -> list[Observation]:
    """What the operator would measure each slot, without the cache (the guard sets its own)."""
    trace = DemandGenerator(scenario).episode(np.random.default_rng(seed), num_slots=slots)
    empty = np.zeros((scenario.num_nodes, scenario.num_models))
    return [
        Observation(
            camera_rates=trace.measured_rates(t),
            camera_rates_recent_mean=trace.counts[max(0, t - 4) : t + 1].mean(axis=0),
            link_quality=trace.link_quality[t],
            cache=empty,
            node_compute_utilisation=np.zeros(scenario.num_nodes),
            hour_of_day=float(trace.hour_of_day[t]),
        )
        for t in range(slots + 1)
    ]


def _drive(
    guard: PolicyGuard, scenario: Scenario, learned: PlacementPolicy, slots: int, settings: GuardSettings = SETTINGS
) -> list[tuple[GuardStep, np.ndarray]]:
    """Run the guard as the operator does, the cluster's cache following the plan in control."""
    cache = np.zeros((scenario.num_nodes, scenario.num_models))
    steps = []
    for observation in _observations(scenario, slots):
        observation = dataclasses.replace(observation, cache=cache)
        step = guard.step(scenario, observation, learned, 2, settings)
        guard.advance()  # as the operator does once the decision is applied
        cache = plan_for(scenario, observation, step.action, 2).cache
        steps.append((step, cache))
    return steps


@pytest.fixture(scope="module")
def city() -> Scenario:
    return load_scenario("traffic-city")


def test_a_policy_that_caches_nothing_loses_control_within_the_window_and_the_baseline_places(
    city: Scenario,
) -> None:
    learned = CachesNothing()
    learned.reset(city, 0)
    guard = PolicyGuard("td3", SETTINGS.candidates, city)
    steps = _drive(guard, city, learned, 14)
    switch = next(i for i, (step, _) in enumerate(steps) if step.fallback)
    # Decision 0 has nothing to score; decisions 1..3 fill the window of 3; decision 3 switches.
    assert switch == SETTINGS.window_intervals
    step, _ = steps[switch]
    assert step.switched and step.choice.reason == "TrailingBaseline"
    assert step.means is not None and step.means["td3"] > (1 + SETTINGS.margin) * step.means[step.in_control]
    assert all(s.fallback for s, _ in steps[switch:]), "a policy that caches nothing never gets control back"
    # The cluster, which cached nothing, converges (churn limit 2 a node) to the placement of the
    # heuristic in control.
    last, cache = steps[-1]
    assert not steps[switch - 1][1].any() and cache.any()
    np.testing.assert_array_equal(cache, guard.tracks[last.in_control].cache)
    # Heuristics may hand control to one another, never sooner than the dwell allows.
    switches = [i for i in range(1, len(steps)) if steps[i][0].switched]
    assert all(b - a >= SETTINGS.min_dwell_intervals for a, b in itertools.pairwise(switches))


def test_a_policy_as_good_as_the_best_keeps_control(city: Scenario) -> None:
    # LRU as the "learned" policy against LRU: equal scores every interval, a tie is never a reason.
    learned = LRUPolicy()
    learned.reset(city, 0)
    guard = PolicyGuard("td3", ("lru",), city)
    steps = _drive(guard, city, learned, 8)
    assert not any(step.fallback for step, _ in steps)
    assert steps[-1][0].choice.reason == "WithinMargin"
    assert steps[-1][0].means is not None and steps[-1][0].means["td3"] == steps[-1][0].means["lru"]


def test_stateful_heuristics_are_stepped_once_per_interval_in_or_out_of_control(city: Scenario) -> None:
    learned = CachesNothing()
    learned.reset(city, 0)
    guard = PolicyGuard("td3", SETTINGS.candidates, city)
    steps = _drive(guard, city, learned, 8)
    assert any(step.fallback for step, _ in steps)
    lru = guard.heuristics["lru"]
    assert lru._clock == len(steps)  # type: ignore[attr-defined]
    # LFU counted each interval's requests once: its counts are the total demand at each node.
    lfu = guard.heuristics["lfu"]
    observations = _observations(city, 8)
    total = sum(node_rates_of(city, o.camera_rates) for o in observations) * city.slot_seconds
    np.testing.assert_allclose(lfu._counts, total)  # type: ignore[attr-defined]


def test_an_interval_without_requests_is_not_scored(city: Scenario) -> None:
    learned = CachesNothing()
    learned.reset(city, 0)
    guard = PolicyGuard("td3", ("lru",), city)
    observation = _observations(city, 1)[1]
    guard.step(city, observation, learned, 2, SETTINGS)
    guard.step(city, observation, learned, 2, SETTINGS)  # runs the first one's counterfactuals first
    assert len(guard.history) == 1
    quiet = dataclasses.replace(observation, camera_rates=np.zeros_like(observation.camera_rates))
    guard.step(city, quiet, learned, 2, SETTINGS)
    assert len(guard.history) == 1


def test_a_fleet_whose_every_switch_redownloads_large_models_keeps_the_learned_policy(city: Scenario) -> None:
    """Models 200x larger on the same backhaul: reaching a heuristic's cache from an empty one costs more than its
    gain repays over the horizon, so the policy that caches nothing keeps control (and says why)."""
    heavy = city.with_overrides(model_size_mb=city.model_size_mb * 200, node_storage_mb=city.node_storage_mb * 200)
    learned = CachesNothing()
    learned.reset(heavy, 0)
    guard = PolicyGuard("td3", SETTINGS.candidates, heavy)
    steps = _drive(guard, heavy, learned, 10, SETTINGS)
    assert not any(step.fallback for step, _ in steps)
    assert steps[-1][0].choice.reason == "SwitchNotRepaid"
    assert steps[-1][0].means is not None and steps[-1][0].means["td3"] > 1.05 * min(steps[-1][0].means.values())
    # The same fleet with the sizes it has hands control over (the test above): only the price differs.
    cheap = dataclasses.replace(SETTINGS, switching_horizon_intervals=1e9)
    guard = PolicyGuard("td3", SETTINGS.candidates, heavy)
    assert any(step.fallback for step, _ in _drive(guard, heavy, learned, 10, cheap))
