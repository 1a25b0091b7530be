"""The operator's own Prometheus metrics (served on ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISION_SECONDS = Histogram(
    "edgeaigc_operator_decision_duration_seconds",
    "Observe + decide + plan time of one decision.",
    ["policy"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_SECONDS = Histogram(
    "edgeaigc_operator_reconcile_duration_seconds",
    "Time to apply one decision to the cluster.",
    ["policy"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_WRITES = Counter(
    "edgeaigc_operator_api_writes_total",
    "API writes by verb: apply (server-side apply), delete, resize (a pod's CPU in place).",
    ["policy", "verb"],
)
RESIZE_FALLBACKS = Counter(
    "edgeaigc_operator_resize_fallbacks_total",
    "Deployments whose pod template was changed (rolling its pods) because a pod could not be resized in place.",
    ["policy"],
)
DECISIONS = Counter("edgeaigc_operator_decisions_total", "Decisions by outcome reason.", ["policy", "reason"])
DEGRADED = Gauge("edgeaigc_operator_degraded", "1 while the policy's last decision was degraded.", ["policy"])
LEADER = Gauge(
    "edgeaigc_operator_leader",
    "1 while this replica holds the operator's Lease and runs the handlers, 0 while it stands by (--leader-elect).",
    ["identity"],
)
POLICY_FALLBACK = Gauge(
    "edgeaigc_policy_fallback",
    "1 while the counterfactual guard has a heuristic place the models instead of the learned policy.",
    ["policy"],
)
GUARD_OBJECTIVE = Gauge(
    "edgeaigc_policy_guard_objective",
    "Mean objective (the slot's -reward, lower is better) of each guard candidate over its window.",
    ["policy", "candidate"],
)
GUARD_SWITCHES = Counter(
    "edgeaigc_policy_guard_switches_total",
    "Times the guard handed control to a candidate (the learned policy or a heuristic).",
    ["policy", "to"],
)
GUARD_SECONDS = Histogram(
    "edgeaigc_policy_guard_duration_seconds",
    "Guard time per interval: part=decision (scoring, choosing; in the decision time), "
    "part=counterfactuals (the other candidates' decisions, after the decision is applied).",
    ["policy", "part"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECORDING_SECONDS = Histogram(
    "edgeaigc_operator_recording_duration_seconds",
    "Time to record one decision's transition (--record-dir), file writes included.",
    ["policy"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
RECORDING_ERRORS = Counter(
    "edgeaigc_operator_recording_errors_total",
    "Decisions whose recording or candidate-actor judgement failed (logged; the decision is not affected).",
    ["policy", "part"],
)
RECORDED_TRANSITIONS = Counter(
    "edgeaigc_operator_recorded_transitions_total", "Transitions recorded (--record-dir).", ["policy"]
)
PROMOTIONS = Counter(
    "edgeaigc_operator_actor_promotions_total",
    "Candidate actors judged, by outcome (Promoted, NotBetter, InvalidCandidate, ...).",
    ["policy", "outcome"],
)
