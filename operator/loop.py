"""One decision of a PlacementPolicy: observe -> decide -> plan -> check -> reconcile -> report.

:meth:`DecisionLoop.run_once` never raises for a failure of the outside world: Prometheus
down, no metrics yet, an invalid fleet, an unreadable actor, a plan that does not fit its nodes
or an API error become a :class:`Decision` with ``degraded_reason`` set, and nothing is
applied or deleted — the last good placement keeps serving. The kopf handlers stay thin: they
call this and write the result to status and events.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from edgeaigc.inference.gateway.routing_table import InvalidRoutingTable, RoutingTable, parse_routing_table
from edgeaigc.operator import constants as c
from edgeaigc.operator.builders import (
    build_routing_configmap,
    build_routing_table,
    desired_objects,
    model_artifacts,
    object_name,
)
from edgeaigc.operator.observe import ObservationError, Observed, PrometheusObserver
from edgeaigc.operator.placement import allocatable_millicores, current_cache, plan_fits_nodes
from edgeaigc.operator.reconcile import (
    DEFAULT_WRITES,
    Reconciler,
    WritePolicy,
    Written,
    plan_writes,
    routing_table_to_write,
    status_message,
)
from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.fleet import InvalidFleet, scenario_from_resources, unattached_cameras
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.plan import plan_for
from edgeaigc.policy.registry import PolicyUnavailable, make_policy
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import Plan, evaluate_slot

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Decision:
    """What one run decided and did (or why it did nothing)."""

    placement: dict[str, list[str]] = dataclasses.field(default_factory=dict)
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


def placement_of(scenario: Scenario, cache: np.ndarray) -> dict[str, list[str]]:
    return {
        node: [scenario.model_names[m] for m in np.flatnonzero(cache[e] > 0)]
        for e, node in enumerate(scenario.node_names)
    }


class DecisionLoop:
    """Decides for one PlacementPolicy; keeps its policy object between runs (LRU state etc.)."""

    def __init__(
        self,
        api_client: ApiClient,
        observer_factory: Any = PrometheusObserver,
        write_policy: WritePolicy = DEFAULT_WRITES,
    ) -> None:
        self.api_client = api_client
        self.write_policy = write_policy
        self.custom = CustomObjectsApi(api_client)
        self.core = CoreV1Api(api_client)
        self.reconciler = Reconciler(api_client)
        self.observer_factory = observer_factory
        self._policy: PlacementPolicy | None = None
        self._policy_key: tuple[Any, ...] | None = None

    def _list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        result: dict[str, Any] = self.custom.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, plural)  # type: ignore[assignment]
        return list(result["items"])

    def _actor_bytes(self, namespace: str, spec: Mapping[str, Any]) -> bytes | None:
        actor = spec.get("actor")
        if not actor:
            return None
        config_map = self.core.read_namespaced_config_map(actor["configMapName"], namespace)
        key = actor["key"]
        data = (config_map.binary_data or {}).get(key)
        if data is None:
            raise ValueError(f"ConfigMap {actor['configMapName']} has no binaryData key {key!r}")
        return base64.b64decode(data)

    def _policy_for(self, policy: Mapping[str, Any], scenario: Scenario) -> PlacementPolicy:
        spec, namespace = with_defaults("PlacementPolicy", policy["spec"]), policy["metadata"]["namespace"]
        key = (
            spec["algorithm"],
            repr(spec.get("actor")),
            scenario.node_names,
            scenario.model_names,
            scenario.camera_names,
        )
        if self._policy is None or self._policy_key != key:
            from edgeaigc.policy.actor_runner import ActorLoadError

            try:
                source = f"ConfigMap {spec['actor']['configMapName']}" if spec.get("actor") else None
                self._policy = make_policy(spec["algorithm"], self._actor_bytes(namespace, spec), source)
            except (ApiException, ValueError, ActorLoadError, PolicyUnavailable) as error:
                detail = f"{error.status} {error.reason}" if isinstance(error, ApiException) else str(error)
                raise PolicyUnavailable(f"cannot load the {spec['algorithm']} policy: {detail}") from error
            self._policy.reset(scenario, seed=0)
            self._policy_key = key
        return self._policy

    @staticmethod
    def _routing_configmap(
        existing: list[dict[str, Any]],
        scenario: Scenario,
        plan: Plan,
        policy: Mapping[str, Any],
        write_policy: WritePolicy = DEFAULT_WRITES,
        node_names: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The routing table ConfigMap to keep: the old one unless routes or shares moved (hysteresis)."""
        name = object_name(policy["metadata"]["name"], "routing")
        config_map = next((o for o in existing if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name), None)
        old: RoutingTable | None
        try:
            old = parse_routing_table(((config_map or {}).get("data") or {})[c.ROUTING_TABLE_KEY])
        except (KeyError, InvalidRoutingTable):
            old = None
        new = build_routing_table(policy, scenario, plan, 0, node_names)
        return build_routing_configmap(policy, routing_table_to_write(old, new, write_policy))

    def _allocatable(self) -> dict[str, dict[str, str]]:
        return {
            str(node.metadata.name): dict(node.status.allocatable or {})
            for node in self.core.list_node().items
            if node.metadata is not None and node.status is not None
        }

    def run_once(self, policy: Mapping[str, Any]) -> Decision:
        started = time.perf_counter()
        decision = Decision()
        spec = with_defaults("PlacementPolicy", policy["spec"])
        namespace, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        decision.dry_run = spec["mode"] == "dry-run"
        try:
            edge_nodes = self._list(namespace, c.PLURAL_EDGE_NODES)
            cameras = self._list(namespace, c.PLURAL_CAMERAS)
            models = self._list(namespace, c.PLURAL_MODELS)
            scenario = scenario_from_resources(policy, edge_nodes, models, cameras)
            decision.warnings += [f"Camera {u} names no EdgeNode" for u in unattached_cameras(edge_nodes, cameras)]
            existing = self.reconciler.existing(namespace, name)
            cache = current_cache(scenario, [o for o in existing if o["kind"] == "Deployment"])
            decision.placement = placement_of(scenario, cache)
            observer = self.observer_factory(spec["prometheusURL"], spec.get("prometheusSelector", ""))
            interval = int(spec["intervalSeconds"])
            observation: Observation = observer.observe(scenario, cache, interval)
            decision.observed = observer.observed(scenario, interval)
            decision.observe_seconds = time.perf_counter() - started
            decide_started = time.perf_counter()
            action = self._policy_for(policy, scenario).act(observation)
            decision.decide_seconds = time.perf_counter() - decide_started
            plan_started = time.perf_counter()
            plan = plan_for(scenario, observation, action, spec["churnLimit"])
            node_names = {n["metadata"]["name"]: n["spec"]["nodeName"] for n in edge_nodes}
            allocatable = self._allocatable()
            problems = plan_fits_nodes(scenario, plan, node_names, allocatable)
            if problems:
                return self._degraded(decision, started, "PlanDoesNotFit", "; ".join(problems))
            outcome = evaluate_slot(scenario, plan, observation.camera_rates, observation.link_quality, cache)
            decision.predicted = {
                "hitRate": outcome.hit_rate,
                "meanResponseTimeSeconds": outcome.mean_response_time_s,
                # Serving cost (what the gateways' counts measure) and the one-off downloads apart.
                "costPerHour": (outcome.cost - outcome.download_cost) * 3600 / scenario.slot_seconds,
                "downloadCost": outcome.download_cost,
            }
            new_placement = placement_of(scenario, plan.cache)
            decision.newly_cached = [
                (node, model)
                for node, models in new_placement.items()
                for model in models
                if model not in decision.placement[node]
            ]
            decision.evicted = [
                (node, model)
                for node, models in decision.placement.items()
                for model in models
                if model not in new_placement[node]
            ]
            decision.plan_seconds = time.perf_counter() - plan_started
            decision.decision_seconds = time.perf_counter() - started
            if decision.dry_run:
                decision.message = "dry-run: placement computed, nothing applied"
                decision.placement = new_placement
                return decision
            reconcile_started = time.perf_counter()
            desired = [
                o
                for o in desired_objects(policy, scenario, plan, node_names, 0, artifacts=model_artifacts(models))
                if o["kind"] != "ConfigMap"
            ] + [self._routing_configmap(existing, scenario, plan, policy, self.write_policy, node_names)]
            # What the EdgeNode offers, but never more than its Kubernetes node can allocate: the bound
            # that CPU decreases kept back by hysteresis must respect.
            capacity = {
                node: min(int(cores * 1000), allocatable_millicores(allocatable, node_names[node]))
                for node, cores in zip(scenario.node_names, scenario.node_cores, strict=True)
            }
            pods = self.reconciler.edge_pods(namespace, name) if self.write_policy.in_place else []
            writes = plan_writes(desired, existing, pods, capacity, self.write_policy)
            decision.written = self.reconciler.apply(namespace, writes)
            decision.writes = decision.written.total - decision.written.delete
            decision.deletes = decision.written.delete
            decision.reconcile_seconds = time.perf_counter() - reconcile_started
            decision.placement = new_placement
            written = decision.written
            decision.message = (
                f"{written.apply} objects applied, {written.resize} pods resized in place, {written.delete} deleted"
            )
            return decision
        except ObservationError as error:
            return self._degraded(decision, started, error.reason, str(error))
        except PolicyUnavailable as error:
            return self._degraded(decision, started, "PolicyUnavailable", str(error))
        except InvalidFleet as error:
            return self._degraded(decision, started, "InvalidFleet", str(error))
        except ApiException as error:
            detail = status_message(error)
            message = f"Kubernetes API: {error.status} {error.reason}" + (f": {detail}" if detail else "")
            return self._degraded(decision, started, "ApiError", message)
        except Exception as error:  # an actor that fails at run time, a bug: report, never crash the loop
            log.exception("decision for %s/%s failed", namespace, name)
            return self._degraded(decision, started, "DecisionFailed", f"{type(error).__name__}: {error}")

    @staticmethod
    def _degraded(decision: Decision, started: float, reason: str, message: str) -> Decision:
        decision.degraded_reason, decision.message = reason, message
        decision.decision_seconds = time.perf_counter() - started
        return decision
