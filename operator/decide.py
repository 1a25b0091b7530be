"""Decide: from a :class:`~edgeaigc.operator.observe.Snapshot` to the placement and the writes that realise it.

:func:`decide` is pure — no API server, no Prometheus: the fleet as the simulator knows it, the
placement the cluster runs, the policy's observation and action, the feasible plan, whether it fits
the nodes, the predicted figures, the manifests and routing table, the writes that differ from what
the cluster has, and the status of the EdgeNodes and InferenceModels. A problem it meets (an invalid
fleet, no metrics, no usable policy, a plan that does not fit, a bug) becomes a :class:`Decision`
with ``degraded_reason`` set and nothing to write: the last good placement keeps serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeaigc.inference.gateway.routing_table import InvalidRoutingTable, RoutingTable, parse_routing_table
from edgeaigc.operator import constants as c
from edgeaigc.operator.artifacts import artifact_conditions
from edgeaigc.operator.builders import (
    RoutingTableTooLarge,
    build_routing_table,
    desired_objects,
    model_artifacts,
    object_name,
)
from edgeaigc.operator.learning import Promotion
from edgeaigc.operator.observe import ObservationError, Observed, Snapshot
from edgeaigc.operator.placement import allocatable_millicores, plan_fits_nodes
from edgeaigc.operator.reconcile import (
    DEFAULT_WRITES,
    Changes,
    WritePolicy,
    Written,
    plan_writes,
    routing_table_to_write,
)
from edgeaigc.operator.status import OVERLAPPING_SHARDS, edge_node_status, model_status
from edgeaigc.policy.actor_runner import ActorLoadError
from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.fleet import InvalidFleet, current_cache, scenario_from_resources, unattached_cameras
from edgeaigc.policy.guard import GuardSettings, GuardStep, PolicyGuard
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import plan_for
from edgeaigc.policy.recording import DecisionTrace, fleet_document
from edgeaigc.policy.registry import LEARNED_POLICIES, PolicyUnavailable, make_policy
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.shard import (
    InvalidSelector,
    is_shard,
    older_overlaps,
    overlap_message,
    selected_nodes,
    shard_cameras,
)
from edgeaigc.policy.system_model import Plan, evaluate_slot

log = logging.getLogger(__name__)

Placement = dict[str, list[str]]
"""EdgeNode -> the models cached on it."""


@dataclasses.dataclass
class Decision:
    """What one run decided and did (or why it did nothing)."""

    placement: Placement = dataclasses.field(default_factory=dict)
    """EdgeNode -> models cached after this decision (the kept placement when degraded)."""
    degraded_reason: str | None = None
    message: str = ""
    writes: int = 0
    """API writes of the reconcile (applies, in-place resizes, CPU annotations; deletes apart)."""
    deletes: int = 0
    written: Written = dataclasses.field(default_factory=Written)
    newly_cached: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    evicted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    predicted: dict[str, float] = dataclasses.field(default_factory=dict)
    observed: Observed = dataclasses.field(default_factory=lambda: Observed(None, None, None))
    decision_seconds: float = 0.0
    """Observe + decide + plan (also set when degraded: time until the failure)."""
    observe_seconds: float = 0.0
    decide_seconds: float = 0.0
    plan_seconds: float = 0.0
    reconcile_seconds: float = 0.0
    dry_run: bool = False
    warnings: list[str] = dataclasses.field(default_factory=list)
    previous_placement: Placement = dataclasses.field(default_factory=dict)
    """The placement the cluster ran before this decision (empty until it was read)."""
    edge_node_status: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """EdgeNode -> its ``status`` once the decision is applied, for those whose status changes."""
    model_status: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """InferenceModel -> its ``status`` once the decision is applied, for those whose status changes."""
    guard: GuardStep | None = None
    """The counterfactual guard's interval (None: no guard for this policy, or it did not run)."""
    counterfactual_seconds: float = 0.0
    """The guard's counterfactual decisions, run after the decision was applied (not in ``decision_seconds``)."""
    trace: DecisionTrace | None = None
    """Observation, action and plan of the decision (None until planned): what the recorder keeps."""
    fleet: dict[str, Any] | None = None
    """The resources the scenario was built from, names and specs (:func:`fleet_document`)."""
    promotion: Promotion | None = None
    """A candidate actor judged in this interval (None: there was none)."""
    recorded: int = 0
    """Transitions this decision completed in the recording (``--record-dir``)."""
    recording_seconds: float = 0.0
    learning_errors: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """(part, error) of a failed recording (``record``) or judgement (``promotion``)."""


def degraded(decision: Decision, reason: str, message: str) -> Decision:
    """``decision`` not carried out: nothing is written and the placement stays the one the cluster has."""
    return dataclasses.replace(decision, degraded_reason=reason, message=message, placement=decision.previous_placement)


def placement_of(scenario: Scenario, cache: np.ndarray) -> Placement:
    return {
        node: [scenario.model_names[m] for m in np.flatnonzero(cache[e] > 0)]
        for e, node in enumerate(scenario.node_names)
    }


class PolicyCache:
    """The policy object of one PlacementPolicy, kept from one decision to the next (a baseline's
    state, a loaded actor) while its algorithm, its actor and the fleet stay the same.

    The actor counts by its content, not by the ConfigMap's name: an actor updated in place is
    loaded at the next decision.
    """

    def __init__(self) -> None:
        self._policy: PlacementPolicy | None = None
        self._key: tuple[Any, ...] | None = None
        self._guard: PolicyGuard | None = None
        self._guard_key: tuple[Any, ...] | None = None

    def policy_for(
        self, spec: Mapping[str, Any], actor: bytes | PolicyUnavailable | None, scenario: Scenario
    ) -> PlacementPolicy:
        """The policy of ``spec.algorithm`` with ``actor``, reset on ``scenario`` when new.

        Raises:
            PolicyUnavailable: the actor could not be read or loaded.
        """
        if isinstance(actor, PolicyUnavailable):
            raise actor
        algorithm = spec["algorithm"]
        actor_digest = None if actor is None else hashlib.sha256(actor).hexdigest()
        key = (algorithm, actor_digest, scenario.node_names, scenario.model_names, scenario.camera_names)
        if self._policy is None or self._key != key:
            source = f"ConfigMap {spec['actor']['configMapName']}" if spec.get("actor") else None
            try:
                policy = make_policy(algorithm, actor, source)
            except (PolicyUnavailable, ActorLoadError) as error:
                raise PolicyUnavailable(f"cannot load the {algorithm} policy: {error}") from error
            policy.reset(scenario, seed=0)
            self._policy, self._key = policy, key
        return self._policy

    def guard_for(self, spec: Mapping[str, Any], scenario: Scenario) -> PolicyGuard | None:
        """The guard of the learned policy :meth:`policy_for` gave (None: disabled, or a heuristic).

        It starts afresh with the policy (a new actor, a new fleet) and when its candidates change.
        """
        settings = GuardSettings.from_spec(spec.get("guard"))
        if not settings.enabled or spec["algorithm"] not in LEARNED_POLICIES:
            self._guard = self._guard_key = None
            return None
        key = (self._key, settings.candidates)
        if self._guard is None or self._guard_key != key:
            self._guard, self._guard_key = PolicyGuard(spec["algorithm"], settings.candidates, scenario), key
        return self._guard

    def run_counterfactuals(self) -> float:
        """The guard's counterfactual decisions of the last decision (seconds; 0 without a guard)."""
        return 0.0 if self._guard is None else self._guard.advance()


def routing_table(
    owned: Sequence[Mapping[str, Any]],
    policy: Mapping[str, Any],
    scenario: Scenario,
    plan: Plan,
    node_names: Mapping[str, str],
    write_policy: WritePolicy = DEFAULT_WRITES,
) -> RoutingTable:
    """The routing table to write: the cluster's own unless routes or shares moved (hysteresis)."""
    name = object_name(policy["metadata"]["name"], "routing")
    config_map = next((o for o in owned if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name), None)
    old: RoutingTable | None
    try:
        old = parse_routing_table(((config_map or {}).get("data") or {})[c.ROUTING_TABLE_KEY])
    except (KeyError, InvalidRoutingTable):
        old = None
    # routing_table_to_write gives the table its generation: the old one's, or the next.
    new = build_routing_table(policy, scenario, plan, 0, node_names)
    return routing_table_to_write(old, new, write_policy)


def _predicted(scenario: Scenario, plan: Plan, observation: Observation, cache: np.ndarray) -> dict[str, float]:
    """Hit rate, response time and cost the system model expects of ``plan`` under the observed demand."""
    outcome = evaluate_slot(scenario, plan, observation.camera_rates, observation.link_quality, cache)
    return {
        "hitRate": outcome.hit_rate,
        "meanResponseTimeSeconds": outcome.mean_response_time_s,
        # Serving cost (what the gateways' counts measure) and the one-off downloads apart.
        "costPerHour": (outcome.cost - outcome.download_cost) * 3600 / scenario.slot_seconds,
        "downloadCost": outcome.download_cost,
    }


def _moved(placement: Placement, other: Placement) -> list[tuple[str, str]]:
    """(EdgeNode, model) pairs of ``placement`` that ``other`` does not have."""
    return [(node, model) for node, models in placement.items() for model in models if model not in other[node]]


def writes(
    snapshot: Snapshot,
    scenario: Scenario,
    plan: Plan,
    node_names: Mapping[str, str],
    write_policy: WritePolicy = DEFAULT_WRITES,
) -> Changes:
    """What to write so that the cluster runs ``plan``: the objects that differ from what it has,
    in-place CPU resizes, the routing table if it moved (hysteresis), and what to delete."""
    policy = snapshot.policy
    table = routing_table(snapshot.owned, policy, scenario, plan, node_names, write_policy)
    # The placement the cluster runs now: replicas new in ``plan`` fetch from their site's neighbours in it.
    running = current_cache(scenario, [o for o in snapshot.owned if o["kind"] == "Deployment"])
    desired = desired_objects(
        policy, scenario, plan, node_names, table, artifacts=model_artifacts(snapshot.models), previous_cache=running
    )
    # What the EdgeNode offers, but never more than its Kubernetes node can allocate: the bound
    # that CPU decreases kept back by hysteresis must respect.
    capacity = {
        node: min(int(cores * 1000), allocatable_millicores(snapshot.allocatable, node_names[node]))
        for node, cores in zip(scenario.node_names, scenario.node_cores, strict=True)
    }
    # Pods count where their CPU is resized in place.
    edge_pods = [
        pod
        for pod in snapshot.pods
        if write_policy.in_place
        and (pod["metadata"].get("labels") or {}).get(c.LABEL_COMPONENT) == c.COMPONENT_EDGE_INFERENCE
    ]
    return plan_writes(desired, snapshot.owned, edge_pods, capacity, write_policy)


def status_changes(new: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether merging ``new`` into a resource's ``current`` status changes it (else no write is needed)."""
    current = current or {}
    return any(current.get(field) != value for field, value in new.items())


def _statuses(decision: Decision, snapshot: Snapshot) -> None:
    """The EdgeNodes' and InferenceModels' status once ``decision.placement`` is applied, for those
    whose status it changes: a steady placement writes no status."""
    current = {r["metadata"]["name"]: r.get("status") for r in snapshot.edge_nodes}
    for node, models in decision.placement.items():
        status = edge_node_status(models)
        if status_changes(status, current.get(node)):
            decision.edge_node_status[node] = status
    cached_on: dict[str, list[str]] = {}
    for node, models in decision.placement.items():
        for model in models:
            cached_on.setdefault(model, []).append(node)
    # The pods' init containers say whether each model's artifact could be fetched.
    artifacts = artifact_conditions(snapshot.pods)
    # Every shard places the same InferenceModels: a shard writes only its own entry of
    # status.shards (a merge patch leaves the other shards' entries alone), never the fields a
    # policy without a selector writes, which would flip between the shards' views every interval.
    shard = snapshot.policy["metadata"]["name"] if is_shard(snapshot.policy) else None
    for resource in snapshot.models:
        name, current = resource["metadata"]["name"], resource.get("status") or {}
        if shard is not None:
            current = (current.get("shards") or {}).get(shard) or {}
        status = model_status(cached_on.get(name, []), artifacts.get(name), current, snapshot.now)
        if status_changes(status, current):
            decision.model_status[name] = status if shard is None else {"shards": {shard: status}}


def decide(
    snapshot: Snapshot, policies: PolicyCache, write_policy: WritePolicy = DEFAULT_WRITES
) -> tuple[Decision, Changes | None]:
    """The decision for ``snapshot`` and the writes that carry it out (None: nothing to write).

    Without a problem, ``placement`` is the placement once the writes are applied; ``message``
    is left to the caller, who applies them.
    """
    policy, spec = snapshot.policy, snapshot.policy["spec"]
    decision = Decision(dry_run=spec["mode"] == "dry-run")
    try:
        # This policy's shard: the EdgeNodes its spec.edgeNodeSelector selects (all without one), their cameras.
        selected = selected_nodes(policy, snapshot.edge_nodes)
        edge_nodes = [n for n in snapshot.edge_nodes if n["metadata"]["name"] in selected]
        cameras = shard_cameras(snapshot.edge_nodes, selected, snapshot.cameras)
        scenario = scenario_from_resources(policy, edge_nodes, snapshot.models, cameras)
        decision.warnings += [f"Camera {u} names no EdgeNode" for u in unattached_cameras(snapshot.edge_nodes, cameras)]
        cache = current_cache(scenario, [o for o in snapshot.owned if o["kind"] == "Deployment"])
        decision.placement = decision.previous_placement = placement_of(scenario, cache)
        # An older policy selects some of these nodes: write nothing (its placement, and this
        # policy's own, stay as they are) until the selectors are disjoint again.
        overlaps = older_overlaps(policy, snapshot.policies, snapshot.edge_nodes)
        if overlaps:
            return degraded(decision, OVERLAPPING_SHARDS, overlap_message(overlaps)), None
        if isinstance(snapshot.samples, ObservationError):
            raise snapshot.samples
        observation = snapshot.samples.observation(scenario, cache, snapshot.now)
        decision.observed = snapshot.samples.observed(scenario)

        decide_started = time.perf_counter()
        learned = policies.policy_for(spec, snapshot.actor, scenario)
        guard = policies.guard_for(spec, scenario)
        if guard is None:
            action = learned.act(observation)
        else:  # the action of whichever candidate is in control
            settings = GuardSettings.from_spec(spec.get("guard"))
            decision.guard = guard.step(
                scenario, observation, learned, spec["churnLimit"], settings, spec["switchingHorizonSlots"]
            )
            action = decision.guard.action
        decision.decide_seconds = time.perf_counter() - decide_started

        plan_started = time.perf_counter()
        plan = plan_for(scenario, observation, action, spec["churnLimit"], spec["switchingHorizonSlots"])
        node_names = {n["metadata"]["name"]: n["spec"]["nodeName"] for n in snapshot.edge_nodes}
        problems = plan_fits_nodes(scenario, plan, node_names, snapshot.allocatable)
        if problems:
            return degraded(decision, "PlanDoesNotFit", "; ".join(problems)), None
        decision.predicted = _predicted(scenario, plan, observation, cache)
        in_control = decision.guard.in_control if decision.guard is not None else spec["algorithm"]
        decision.trace = DecisionTrace(scenario, observation, np.asarray(action), plan, in_control)
        decision.fleet = fleet_document(policy, snapshot.edge_nodes, snapshot.models, snapshot.cameras)
        decision.placement = placement_of(scenario, plan.cache)
        decision.newly_cached = _moved(decision.placement, decision.previous_placement)
        decision.evicted = _moved(decision.previous_placement, decision.placement)
        if decision.dry_run:
            decision.message = "dry-run: placement computed, nothing applied"
            decision.plan_seconds = time.perf_counter() - plan_started
            return decision, None
        changes = writes(snapshot, scenario, plan, node_names, write_policy)
        _statuses(decision, snapshot)
        decision.plan_seconds = time.perf_counter() - plan_started
        return decision, changes
    except ObservationError as error:
        return degraded(decision, error.reason, str(error)), None
    except PolicyUnavailable as error:
        return degraded(decision, "PolicyUnavailable", str(error)), None
    except InvalidFleet as error:
        return degraded(decision, "InvalidFleet", str(error)), None
    except InvalidSelector as error:
        return degraded(decision, "InvalidSelector", f"spec.edgeNodeSelector: {error}"), None
    except RoutingTableTooLarge as error:
        return degraded(decision, "RoutingTableTooLarge", str(error)), None
    except Exception as error:  # an actor that fails at run time, a bug: report, never crash the loop
        log.exception("decision for %s/%s failed", policy["metadata"]["namespace"], policy["metadata"]["name"])
        return degraded(decision, "DecisionFailed", f"{type(error).__name__}: {error}"), None
