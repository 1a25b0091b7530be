"""The counterfactual guard: never run a learned policy that loses to the best heuristic.

Each interval the operator also asks the heuristics (LRU, LFU, static top-K, myopic) what they
would decide, without writing anything, and scores every candidate's decision with the system
model (:func:`~edgeaigc.policy.system_model.evaluate_slot`, as the decision's prediction does) on
the demand that then came. When the policy in control trails the best candidate by more than a
margin over a window of intervals, the best one takes control; the learned policy gets it back
once it is ahead of the one in control by the margin over the window.

Every candidate runs its own trajectory (a *track*), the one in control included: it decides every
interval from the observed demand and its own cache (the one its previous decisions left), through
the same plan projection and churn limit as the real decision, so a stateful heuristic (LRU's
recency, LFU's counts, top-K's first ranking) is stepped once per interval exactly as if it had run
the cluster since the guard started. Tracks start from the cluster's placement. The candidate in
control also decides for the cluster's own cache, and that decision is applied; while the cluster
follows it the two are the same. Scores are the tracks' alone, so a candidate that just took
control is not judged on the downloads of moving the cluster from the previous one's placement
(which would make whoever took control last look worst, and hand control around).

Scoring is honest about time: a decision made at interval ``t`` is scored on the demand measured
at ``t + 1`` (what it would have served), including the download cost of what it newly cached
against its own previous cache. Lower is better (the objective is the slot's ``-reward``). An
interval without requests says nothing about caching and is not scored; an interval the operator
could not observe (no metrics) never reaches the guard, so the window holds the last scored
intervals, not the last clock intervals.

Hysteresis: the one in control is replaced only by a candidate better by more than ``margin``
(relative) over the whole window, and not before it has been in control ``min_dwell_intervals``
scored intervals; ties never switch. A switch also has a price: the cluster downloads the new
candidate's cache. It is made only when the window's gain, over ``switching_horizon_intervals``,
repays that (:func:`repaid`). Without it, in a held-out world of 160-680 MB models on a 39 Mbit/s
backhaul, the guard handed control between the learned policy and three heuristics every 5-8
intervals, each switch re-downloading the fleet's cache, and scored 66x the best heuristic.
Switching back needs the same margin (and the same price) the other way, so a policy within the
margin of the best stays, and no sequence of scores can make it switch every interval.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import plan_for
from edgeaigc.policy.registry import make_policy
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import Plan, evaluate_slot, node_rates_of, switching_cost

#: The heuristics the guard compares a learned policy with (names of :mod:`.registry`).
GUARD_CANDIDATES: tuple[str, ...] = ("lru", "lfu", "static_topk", "myopic")


@dataclasses.dataclass(frozen=True)
class GuardSettings:
    """``spec.guard`` of a PlacementPolicy (defaults: the CRD's)."""

    enabled: bool = True
    margin: float = 0.05
    """Relative objective gap that counts as better (0.05: 5 % lower objective)."""
    window_intervals: int = 5
    """Scored intervals whose mean objective is compared."""
    min_dwell_intervals: int = 5
    """Scored intervals a policy stays in control after a switch before the next one."""
    candidates: tuple[str, ...] = GUARD_CANDIDATES
    switching_horizon_intervals: float = 20.0
    """Intervals over which a switch's gain must repay moving the placement to the new policy's cache."""

    @classmethod
    def from_spec(cls, guard: Mapping[str, Any] | None) -> GuardSettings:
        guard = guard or {}
        default = cls()
        return cls(
            enabled=bool(guard.get("enabled", default.enabled)),
            margin=float(guard.get("margin", default.margin)),
            window_intervals=int(guard.get("windowIntervals", default.window_intervals)),
            min_dwell_intervals=int(guard.get("minDwellIntervals", default.min_dwell_intervals)),
            candidates=tuple(guard.get("candidates", default.candidates)),
            switching_horizon_intervals=float(
                guard.get("switchingHorizonIntervals", default.switching_horizon_intervals)
            ),
        )


def window_means(history: Sequence[Mapping[str, float]], window: int) -> dict[str, float] | None:
    """Mean objective of every candidate over the last ``window`` scored intervals (None: fewer yet)."""
    if window < 1 or len(history) < window:
        return None
    recent = history[-window:]
    return {name: float(np.mean([scores[name] for scores in recent])) for name in recent[-1]}


def better_by(challenger: float, incumbent: float, margin: float) -> bool:
    """Whether ``incumbent`` trails ``challenger`` by more than ``margin`` (objective over ``1 + margin`` times)."""
    return incumbent > challenger + margin * abs(challenger)


@dataclasses.dataclass(frozen=True)
class Choice:
    """Who is in control after an interval, and why."""

    in_control: str
    switched: bool
    reason: str
    """CamelCase: ``CollectingWindow``, ``Dwelling``, ``TrailingBaseline``, ``LearnedPolicyAhead``,
    ``WithinMargin``, ``SwitchNotRepaid``."""
    message: str


def repaid(gain_per_interval: float, switch_cost: float, horizon_intervals: float) -> bool:
    """Whether a switch whose window gain is ``gain_per_interval`` repays its one-time ``switch_cost`` over the
    horizon (both in slot-objective units; a switch that costs nothing is repaid by any gain)."""
    return gain_per_interval * horizon_intervals > switch_cost


def choose(
    in_control: str,
    learned: str,
    means: Mapping[str, float] | None,
    settings: GuardSettings,
    intervals_in_control: int,
    switch_costs: Mapping[str, float] | None = None,
) -> Choice:
    """Keep ``in_control`` or hand control over (pure; the hysteresis of the module docstring).

    Args:
        in_control: the candidate whose decisions are applied now.
        learned: the policy of ``spec.algorithm``; it takes control back before any heuristic.
        means: window mean objective of every candidate (None: the window is not full yet).
        intervals_in_control: scored intervals since ``in_control`` took control.
        switch_costs: what moving the placement to each candidate's cache would cost once, in slot-objective
            units (:meth:`PolicyGuard.switch_costs`); a switch is made only when its gain over the window,
            times ``settings.switching_horizon_intervals``, exceeds it. None: switches cost nothing.
    """
    margin, horizon = settings.margin, settings.switching_horizon_intervals
    costs = switch_costs or {}
    if means is None:
        return Choice(in_control, False, "CollectingWindow", f"{in_control} in control; scoring the candidates")
    if intervals_in_control < settings.min_dwell_intervals:
        return Choice(
            in_control,
            False,
            "Dwelling",
            f"{in_control} in control for {intervals_in_control} of at least {settings.min_dwell_intervals} intervals",
        )
    current = means[in_control]
    window = f"over the last {settings.window_intervals} intervals"

    def not_repaid(challenger: str) -> Choice:
        gain, cost = current - means[challenger], costs.get(challenger, 0.0)
        return Choice(
            in_control,
            False,
            "SwitchNotRepaid",
            f"{challenger} is ahead of {in_control} by {_gap(current, means[challenger])} {window}, but moving the "
            f"placement to its cache would cost {cost:.4g} ({cost / gain:.0f} intervals of the gain; horizon "
            f"{horizon:g}): {in_control} keeps placing the models",
        )

    if in_control != learned and better_by(means[learned], current, margin):
        if not repaid(current - means[learned], costs.get(learned, 0.0), horizon):
            return not_repaid(learned)
        return Choice(
            learned,
            True,
            "LearnedPolicyAhead",
            f"{learned} is ahead of {in_control} by {_gap(current, means[learned])} {window} "
            f"(objective {means[learned]:.4g} vs {current:.4g}, margin {margin:.0%}): {learned} places the models",
        )
    # The best heuristic worth its switch; among equals the first in the settings' order, for a deterministic
    # choice. A heuristic ahead in the window whose cache would cost more to reach than its gain repays over the
    # horizon is no better (a world of large models and a slow backhaul: every switch re-downloads the fleet).
    others = [name for name in settings.candidates if name != in_control and name in means]
    ahead = [name for name in others if better_by(means[name], current, margin)]
    worth = [name for name in ahead if repaid(current - means[name], costs.get(name, 0.0), horizon)]
    best = min(worth, key=lambda name: means[name], default=None)
    if best is not None:
        return Choice(
            best,
            True,
            "TrailingBaseline",
            f"{in_control} trails {best} by {_gap(current, means[best])} {window} "
            f"(objective {current:.4g} vs {means[best]:.4g}, margin {margin:.0%}): {best} places the models",
        )
    if ahead:
        return not_repaid(min(ahead, key=lambda name: means[name]))
    if in_control != learned:
        return Choice(
            in_control,
            False,
            "TrailingBaseline",
            f"{in_control} in control: {learned} is not ahead of it by {margin:.0%} {window} "
            f"(objective {means[learned]:.4g} vs {current:.4g})",
        )
    message = f"{in_control} in control: no candidate better by {margin:.0%} {window}"
    return Choice(in_control, False, "WithinMargin", message)


def _gap(worse: float, better: float) -> str:
    return f"{(worse - better) / abs(better):.1%}" if better else "an unbounded factor"


def with_cache(scenario: Scenario, observation: Observation, cache: np.ndarray) -> Observation:
    """``observation`` as it would read with ``cache`` placed (the node use follows the cache)."""
    node_rates = node_rates_of(scenario, observation.camera_rates)
    utilisation = (node_rates * scenario.model_work_s * cache).sum(axis=1) / scenario.node_compute
    return dataclasses.replace(observation, cache=cache.astype(float), node_compute_utilisation=utilisation)


@dataclasses.dataclass
class Track:
    """One candidate's own trajectory: its last decision and the cache it decided from."""

    cache: np.ndarray
    """The cache its decisions have left (the cluster's while it is in control)."""
    plan: Plan | None = None
    """Its last decision, to be scored on the next interval's demand."""
    cache_before_plan: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class GuardStep:
    """What the guard did in one interval."""

    action: np.ndarray
    """The action of the candidate in control, for the real observation."""
    learned: str
    in_control: str
    previous: str
    """Who was in control before this interval."""
    choice: Choice
    means: dict[str, float] | None
    """Window mean objective per candidate (None while the window fills)."""
    scored_intervals: int
    seconds: float
    """Time the guard added to the decision: scoring, choosing (the other candidates' decisions are
    :meth:`PolicyGuard.advance`'s, after the decision)."""

    @property
    def fallback(self) -> bool:
        return self.in_control != self.learned

    @property
    def switched(self) -> bool:
        return self.in_control != self.previous


@dataclasses.dataclass(frozen=True)
class _Pending:
    """What :meth:`PolicyGuard.advance` needs of the last step."""

    scenario: Scenario
    observation: Observation
    policies: dict[str, PlacementPolicy]
    churn_limit: int | None
    switching_horizon_slots: float
    decided: set[str]
    """Candidates whose track already decided (the one in control, when the cluster runs its track)."""


class PolicyGuard:
    """The counterfactual guard of one PlacementPolicy's learned policy (see the module docstring).

    Args:
        learned: name of the learned policy (``spec.algorithm``).
        candidates: the heuristics to compare it with.
        scenario: the fleet; a new fleet needs a new guard.
    """

    def __init__(self, learned: str, candidates: Sequence[str], scenario: Scenario) -> None:
        self.learned = learned
        self.heuristics: dict[str, PlacementPolicy] = {}
        for name in candidates:
            if name != learned:
                policy = make_policy(name)
                policy.reset(scenario, seed=0)
                self.heuristics[name] = policy
        empty = np.zeros((scenario.num_nodes, scenario.num_models))
        self.tracks = {name: Track(empty.copy()) for name in (learned, *self.heuristics)}
        self.started = False
        self._pending: _Pending | None = None
        self.in_control = learned
        self.intervals_in_control = 0
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=1000)

    def score(self, scenario: Scenario, observation: Observation) -> dict[str, float] | None:
        """Every track's last decision scored on the demand just observed (None: not scored)."""
        if observation.camera_rates.sum() <= 0:
            return None
        scores = {}
        for name, track in self.tracks.items():
            if track.plan is None or track.cache_before_plan is None:
                return None
            outcome = evaluate_slot(
                scenario, track.plan, observation.camera_rates, observation.link_quality, track.cache_before_plan
            )
            scores[name] = -outcome.reward
        return scores

    def step(
        self,
        scenario: Scenario,
        observation: Observation,
        learned_policy: PlacementPolicy,
        churn_limit: int | None,
        settings: GuardSettings,
        switching_horizon_slots: float = 0.0,
    ) -> GuardStep:
        """Score the last decisions, choose who is in control, and decide for the cluster.

        ``observation`` is the cluster's (its cache is the real placement); the returned action is
        the in-control candidate's for it. The other candidates' decisions on their tracks are left
        to :meth:`advance`, which the operator runs once the decision is applied: they are needed
        only for the next interval's scores, and at 100 nodes the myopic optimizer's alone takes
        longer than the whole decision may.
        """
        started = time.perf_counter()
        self.advance()  # the last interval's, if nobody ran them
        if not self.started:  # every candidate starts from what the cluster runs
            for track in self.tracks.values():
                track.cache = np.asarray(observation.cache, float).copy()
            self.started = True
        previous = self.in_control
        scores = self.score(scenario, observation)
        if scores is not None:
            self.history.append(scores)
            self.intervals_in_control += 1
        means = window_means(list(self.history), settings.window_intervals)
        # The switches' prices matter only once the window is full and the dwell is over (choose's order).
        costs = None
        if means is not None and self.intervals_in_control >= settings.min_dwell_intervals:
            costs = self.switch_costs(scenario, observation, means)
        choice = choose(self.in_control, self.learned, means, settings, self.intervals_in_control, costs)
        if choice.switched:
            self.in_control, self.intervals_in_control = choice.in_control, 0
        policies: dict[str, PlacementPolicy] = {self.learned: learned_policy, **self.heuristics}
        policy, track = policies[self.in_control], self.tracks[self.in_control]
        seen = with_cache(scenario, observation, track.cache)
        acted = time.perf_counter()
        if np.array_equal(seen.cache, np.asarray(observation.cache, float)):
            action = policy.act(seen)  # the cluster runs its track: one decision serves both
            in_control_seconds = time.perf_counter() - acted
            self._decide_on_track(track, scenario, seen, action, churn_limit, switching_horizon_slots)
            decided = {self.in_control}
        else:
            # The cluster's cache differs from the track's (it took control from another one, or a
            # decision was not applied): decide for the cluster on a copy, so that the policy's
            # state steps once, on its track. What any of our policies keeps (recency, counts, a
            # first ranking) follows the demand alone, not the cache, so the copy's step is the same.
            real = policy if self.in_control == self.learned else copy.deepcopy(policy)
            action = real.act(observation)
            in_control_seconds = time.perf_counter() - acted
            decided = set()
        self._pending = _Pending(scenario, observation, policies, churn_limit, switching_horizon_slots, decided)
        return GuardStep(
            action=action,
            learned=self.learned,
            in_control=self.in_control,
            previous=previous,
            choice=choice,
            means=means,
            scored_intervals=len(self.history),
            seconds=time.perf_counter() - started - in_control_seconds,
        )

    def switch_costs(
        self, scenario: Scenario, observation: Observation, means: Mapping[str, float]
    ) -> dict[str, float]:
        """What moving the cluster's placement to each other candidate's cache would cost once, in slot-objective
        units: the downloads' price, weighted as the objective weighs cost, and the candidate's window gain forgone
        while they arrive (:func:`~edgeaigc.policy.system_model.switching_cost`, the plan's own)."""
        cluster = np.asarray(observation.cache, float)
        total_rate = float(observation.camera_rates.sum())
        current = means[self.in_control]
        costs = {}
        for name, track in self.tracks.items():
            if name == self.in_control or name not in means:
                continue
            gain = np.full(scenario.num_nodes, max(current - means[name], 0.0) / scenario.num_nodes)
            costs[name] = float(switching_cost(scenario, track.cache, cluster, gain, total_rate).sum())
        return costs

    def advance(self) -> float:
        """The counterfactuals of the last :meth:`step`: every candidate not decided yet decides on its track.

        Returns the seconds it took (0 when there was nothing to do).
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return 0.0
        started = time.perf_counter()
        for name, track in self.tracks.items():
            if name not in pending.decided:
                seen = with_cache(pending.scenario, pending.observation, track.cache)
                action = pending.policies[name].act(seen)
                self._decide_on_track(
                    track, pending.scenario, seen, action, pending.churn_limit, pending.switching_horizon_slots
                )
        return time.perf_counter() - started

    @staticmethod
    def _decide_on_track(
        track: Track,
        scenario: Scenario,
        seen: Observation,
        action: np.ndarray,
        churn_limit: int | None,
        switching_horizon_slots: float = 0.0,
    ) -> None:
        track.cache_before_plan = seen.cache
        # The same switching cost as the applied plan's: a counterfactual must be what that policy would run.
        track.plan = plan_for(scenario, seen, action, churn_limit, switching_horizon_slots)
        track.cache = track.plan.cache
