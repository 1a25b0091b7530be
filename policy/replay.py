"""Counterfactual replay: how a policy would have done on the demand a recording measured.

The guard's scoring (:mod:`.guard`) over a whole recording: the policy starts from the cache the
cluster had at the first recorded interval and then follows its own track — at every interval it
sees the recorded observation with its own cache in place, decides, its plan is projected as the
operator projects it (churn limit, switching horizon of the recorded PlacementPolicy), and that
plan is scored by the system model on the demand the *next* interval measured, downloads included
against its own previous cache. Lower is better (the slot objective, ``-reward``); intervals
without requests are not scored. Two policies replayed on the same recording face exactly the same
demand, which is what makes the promotion of a candidate actor a fair comparison.

numpy only: the operator imports this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.guard import with_cache
from edgeaigc.policy.plan import plan_for
from edgeaigc.policy.recording import Recording
from edgeaigc.policy.system_model import evaluate_slot


@dataclasses.dataclass(frozen=True)
class Replay:
    """A policy's counterfactual run over a recording."""

    mean_objective: float
    """Mean slot objective over the scored intervals (lower is better)."""
    intervals: int
    """Intervals scored."""
    hit_rate: float
    """Share of the recorded requests its caches would have served at the edge."""
    downloads: int


def recorded_objective(recording: Recording) -> float:
    """Mean objective of what the cluster actually ran (the recorded rewards), on the same intervals."""
    scored = recording.arrays["next_camera_rates"].sum(axis=(1, 2)) > 0
    return float(-recording.arrays["reward"][scored].mean()) if scored.any() else float("nan")


def replay(recording: Recording, policy: PlacementPolicy, seed: int = 0, last: int | None = None) -> Replay:
    """Replay ``policy`` over ``recording`` (its last ``last`` transitions; all when None).

    ``policy`` is reset on the recording's scenario first.
    """
    scenario = recording.scenario
    spec = with_defaults("PlacementPolicy", recording.fleet["policy"]["spec"])
    churn_limit, horizon = spec["churnLimit"], spec["switchingHorizonSlots"]
    policy.reset(scenario, seed=seed)
    start = 0 if last is None else max(0, len(recording) - last)
    cache = recording.observation(start).cache
    objectives: list[float] = []
    requests = hits = 0.0
    downloads = 0
    for index in range(start, len(recording)):
        seen = with_cache(scenario, recording.observation(index), cache)
        plan = plan_for(scenario, seen, policy.act(seen), churn_limit, horizon)
        following = recording.observation(index, "next_")
        if following.camera_rates.sum() > 0:
            outcome = evaluate_slot(scenario, plan, following.camera_rates, following.link_quality, cache)
            objectives.append(-outcome.reward)
            requests += outcome.requests
            hits += outcome.hits
            downloads += outcome.downloads
        cache = plan.cache
    return Replay(
        mean_objective=float(np.mean(objectives)) if objectives else float("nan"),
        intervals=len(objectives),
        hit_rate=hits / requests if requests else 0.0,
        downloads=downloads,
    )
