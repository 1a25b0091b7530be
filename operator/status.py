"""Status of the custom resources from a Decision (pure; the handlers write it)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeaigc.operator.artifacts import ArtifactCondition

#: Degraded reason (and Ready=False reason) of a policy held because an older policy selects some of
#: its EdgeNodes (:func:`edgeaigc.policy.shard.older_overlaps`).
OVERLAPPING_SHARDS = "OverlappingShards"

if TYPE_CHECKING:  # decide computes the EdgeNodes' and InferenceModels' status with this module
    from edgeaigc.operator.decide import Decision
    from edgeaigc.operator.learning import Promotion
    from edgeaigc.policy.guard import GuardStep


def _condition(
    kind: str, status: str, reason: str, message: str, now: str, previous: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A condition; ``lastTransitionTime`` moves only when the status changes."""
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
    }


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.1%}"


def _fixed(value: float | None, digits: int) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def policy_status(decision: Decision, previous: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """The PlacementPolicy's ``status``: conditions, placement, observed vs predicted figures.

    When degraded, Ready keeps its previous value (the last good placement is still serving)
    and Degraded says why; a policy held for overlapping an older shard is not Ready.
    """
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = list(previous.get("conditions") or [])
    if decision.degraded_reason == OVERLAPPING_SHARDS:
        # Held, not failing: the policy runs nothing of its own until the overlap is gone.
        new = [
            _condition("Ready", "False", OVERLAPPING_SHARDS, decision.message, stamp, conditions),
            _condition("Degraded", "True", OVERLAPPING_SHARDS, decision.message, stamp, conditions),
        ]
    elif decision.degraded_reason:
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        new = [
            _condition(
                "Ready",
                ready["status"] if ready else "Unknown",
                ready.get("reason", "Pending") if ready else "Pending",
                "last good placement kept" if ready and ready.get("status") == "True" else "no placement decided yet",
                stamp,
                conditions,
            ),
            _condition("Degraded", "True", decision.degraded_reason, decision.message, stamp, conditions),
        ]
    else:
        reason = "DryRun" if decision.dry_run else "Reconciled"
        new = [
            _condition("Ready", "True", reason, decision.message, stamp, conditions),
            _condition("Degraded", "False", "AsExpected", "", stamp, conditions),
        ]
    fallback = policy_fallback_condition(decision, stamp, conditions)
    if fallback is not None:
        new.append(fallback)
    promotion = actor_promotion_condition(decision, stamp, conditions)
    if promotion is not None:
        new.append(promotion)
    status: dict[str, Any] = {
        "conditions": new,
        "placement": [{"edgeNode": node, "models": models} for node, models in sorted(decision.placement.items())],
    }
    if not decision.degraded_reason:
        status["lastDecisionTime"] = stamp
        status["predicted"] = {
            "hitRate": _percent(decision.predicted.get("hitRate")),
            "meanResponseTimeSeconds": _fixed(decision.predicted.get("meanResponseTimeSeconds", 0.0), 3),
            "costPerHour": _fixed(decision.predicted.get("costPerHour", 0.0), 4),
            "downloadCost": _fixed(decision.predicted.get("downloadCost", 0.0), 4),
        }
    if decision.guard is not None:
        status["guard"] = guard_status(decision.guard)
    if decision.promotion is not None and decision.promotion.final:
        status["learning"] = learning_status(decision.promotion, stamp)
    observed = decision.observed
    if observed.hit_rate is not None:
        status["observed"] = {
            "hitRate": _percent(observed.hit_rate),
            "meanResponseTimeSeconds": _fixed(observed.mean_response_time_s, 3),
            "costPerHour": _fixed(observed.cost_per_hour, 4),
        }
    return status


def policy_fallback_condition(
    decision: Decision, stamp: str, previous: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``PolicyFallback``: True while a heuristic places the models instead of the learned policy.

    A decision without a guard step (degraded, or no guard) keeps the previous condition as it was
    (the status is patched whole, so it must be written again); None when there never was one.
    """
    step = decision.guard
    old = next((dict(c) for c in previous if c.get("type") == "PolicyFallback"), None)
    if step is None:
        if decision.degraded_reason or old is None:
            return old
        message = "the guard does not run (spec.guard.enabled is false, or the algorithm is a heuristic)"
        return _condition("PolicyFallback", "False", "GuardOff", message, stamp, previous)
    status = "True" if step.fallback else "False"
    message = step.choice.message
    if step.means:
        figures = ", ".join(f"{name} {value:.4g}" for name, value in sorted(step.means.items(), key=lambda i: i[1]))
        message += f"; mean objective over the window (lower is better): {figures}"
    return _condition("PolicyFallback", status, step.choice.reason, message, stamp, previous)


def actor_promotion_condition(
    decision: Decision, stamp: str, previous: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``ActorPromotion``: True once a candidate actor was promoted, False when one was refused or waits.

    Kept as it was while no candidate is judged (None when there never was one).
    """
    promotion = decision.promotion
    old = next((dict(c) for c in previous if c.get("type") == "ActorPromotion"), None)
    if promotion is None:
        return old
    status = "True" if promotion.promoted else "Unknown" if promotion.outcome == "CollectingRecording" else "False"
    return _condition("ActorPromotion", status, promotion.outcome, promotion.message, stamp, previous)


def learning_status(promotion: Promotion, stamp: str) -> dict[str, Any]:
    """``status.learning``: the last candidate judged, both counterfactual scores and the verdict."""
    status: dict[str, Any] = {
        "lastJudgedTime": stamp,
        "candidate": promotion.candidate_digest,
        "outcome": promotion.outcome,
        "margin": f"{promotion.margin:.0%}",
        # The replays run in the decision loop, after the decision: how long the judgement held it up.
        "judgeSeconds": f"{promotion.seconds:.2f}",
    }
    if promotion.candidate is not None and promotion.current is not None:
        status.update(
            candidateObjective=f"{promotion.candidate.mean_objective:.5g}",
            currentObjective=f"{promotion.current.mean_objective:.5g}",
            candidateHitRate=_percent(promotion.candidate.hit_rate),
            currentHitRate=_percent(promotion.current.hit_rate),
            intervals=promotion.candidate.intervals,
        )
    return status


def guard_status(step: GuardStep) -> dict[str, Any]:
    """``status.guard``: who is in control and every candidate's window mean objective."""
    return {
        "inControl": step.in_control,
        "scoredIntervals": step.scored_intervals,
        "objective": {name: f"{value:.5g}" for name, value in sorted((step.means or {}).items())},
    }


def edge_node_status(models: Sequence[str]) -> dict[str, Any]:
    return {"cachedModels": sorted(models), "cachedModelsSummary": ", ".join(sorted(models)) or "-"}


def model_status(
    edge_nodes: Sequence[str],
    artifact: ArtifactCondition | None = None,
    previous: Mapping[str, Any] | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Where a model is cached and, for a model with ``spec.artifact``, whether its pods could fetch it.

    Conditions are written whole (merge patch), so the other conditions of ``previous`` are kept.
    """
    status: dict[str, Any] = {"cachedOn": sorted(edge_nodes), "cachedOnCount": len(edge_nodes)}
    if artifact is not None:
        conditions = list((previous or {}).get("conditions") or [])
        stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        kept = [c for c in conditions if c.get("type") != artifact.type]
        status["conditions"] = [
            *kept,
            _condition(artifact.type, artifact.status, artifact.reason, artifact.message, stamp, conditions),
        ]
    return status
