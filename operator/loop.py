"""One decision of a PlacementPolicy: observe -> decide -> apply.

:func:`~edgeaigc.operator.observe.observe` reads (API server, Prometheus),
:func:`~edgeaigc.operator.decide.decide` decides without I/O, and :meth:`DecisionLoop.apply`
writes the changes. :meth:`DecisionLoop.run_once` never raises for a failure of the outside world:
Prometheus down, no metrics yet, an invalid fleet, an unreadable actor, a plan that does not fit
its nodes or an API error become a :class:`~edgeaigc.operator.decide.Decision` with
``degraded_reason`` set, and nothing is applied or deleted — the last good placement keeps
serving. The kopf handlers stay thin: they call this and write the result to status and events.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from edgeaigc.operator.decide import Decision, PolicyCache, decide, degraded
from edgeaigc.operator.demand_history import DemandHistory
from edgeaigc.operator.leader import Fence, unfenced
from edgeaigc.operator.learning import Learner, LearningSettings
from edgeaigc.operator.object_cache import ObjectCaches
from edgeaigc.operator.observe import ClusterReader, PrometheusObserver, observe
from edgeaigc.operator.reconcile import DEFAULT_WRITES, Changes, Reconciler, WritePolicy, status_message
from edgeaigc.policy.crd_defaults import with_defaults

log = logging.getLogger(__name__)

NOT_LEADER = "NotLeader"
"""Degraded reason of a decision fenced off because this replica lost the lease."""


def api_error(error: ApiException) -> tuple[str, str]:
    """Degraded reason and message of a failed API call."""
    detail = status_message(error)
    return "ApiError", f"Kubernetes API: {error.status} {error.reason}" + (f": {detail}" if detail else "")


class DecisionLoop:
    """Decides for one PlacementPolicy; keeps its policy object between runs (LRU state etc.)."""

    def __init__(
        self,
        api_client: ApiClient,
        observer_factory: Callable[[str, str], PrometheusObserver] = PrometheusObserver,
        write_policy: WritePolicy = DEFAULT_WRITES,
        fence: Fence = unfenced,
        caches: ObjectCaches | None = None,
        learning: LearningSettings | None = None,
    ) -> None:
        """``caches``: the process's watch-based caches (shared by the loops of its policies); without them
        the loop runs caches of its own, stopped by :meth:`close`."""
        self._own_caches = ObjectCaches(api_client) if caches is None else None
        self.cluster = ClusterReader(api_client, caches=caches or self._own_caches)
        self.reconciler = Reconciler(api_client)
        self.observer_factory = observer_factory
        self.write_policy = write_policy
        self.policies = PolicyCache()
        self.fence = fence
        self.core = CoreV1Api(api_client)
        self.learning = learning
        self.learner: Learner | None = None
        self.history = DemandHistory()
        """The policy's last intervals' request counts: its trend window, without a query of its own."""

    def close(self) -> None:
        """Release the caches (stopping them if they were the loop's own)."""
        self.cluster.close()
        if self._own_caches is not None:
            self._own_caches.close()

    def run_once(self, policy: Mapping[str, Any]) -> Decision:
        started = time.perf_counter()
        spec = with_defaults("PlacementPolicy", policy["spec"])
        metadata = policy["metadata"]
        try:
            prometheus = self.observer_factory(spec["prometheusURL"], spec.get("prometheusSelector", ""))
            snapshot = observe(self.cluster, prometheus, policy, self.history)
        except Exception as error:  # a failed read is reported, never crashes the loop
            decision = Decision(dry_run=spec["mode"] == "dry-run", decision_seconds=time.perf_counter() - started)
            if isinstance(error, ApiException):
                return degraded(decision, *api_error(error))
            log.exception("observing %s/%s failed", metadata["namespace"], metadata["name"])
            return degraded(decision, "DecisionFailed", f"{type(error).__name__}: {error}")
        observe_seconds = time.perf_counter() - started
        decision, changes = decide(snapshot, self.policies, self.write_policy)
        decision.observe_seconds = observe_seconds
        decision.decision_seconds = time.perf_counter() - started
        if changes is not None:
            decision = self.apply(metadata["namespace"], decision, changes)
        # Once the placement is applied: the other candidates' decisions only feed the next scores.
        decision.counterfactual_seconds = self.policies.run_counterfactuals()
        if self.learning is not None:
            self.learn(metadata["namespace"], metadata["name"], spec, decision)
        return decision

    def learn(self, namespace: str, name: str, spec: Mapping[str, Any], decision: Decision) -> None:
        """Record the decision and judge a candidate actor (:mod:`.learning`); a failure never touches the decision."""
        assert self.learning is not None
        if self.learner is None:
            self.learner = Learner(self.learning, namespace, name)
        recorder = self.learner.recorder
        started = time.perf_counter()
        try:
            if decision.degraded_reason or decision.dry_run or decision.trace is None or decision.fleet is None:
                recorder.interrupt()  # not applied: its outcome is not what the cluster ran
            else:
                before = recorder.transitions
                recorder.record(decision.fleet, decision.trace)
                decision.recorded = recorder.transitions - before
        except Exception as error:  # a full disk, a bug: logged and counted, the loop goes on
            log.exception("recording the decision of %s/%s failed", namespace, name)
            recorder.interrupt()
            decision.learning_errors.append(("record", f"{type(error).__name__}: {error}"))
        decision.recording_seconds = time.perf_counter() - started
        try:
            decision.promotion = self.learner.judge_candidate(self.core, namespace, spec, self.fence)
        except Exception as error:
            log.exception("judging the candidate actor of %s/%s failed", namespace, name)
            decision.learning_errors.append(("promotion", f"{type(error).__name__}: {error}"))

    def apply(self, namespace: str, decision: Decision, changes: Changes) -> Decision:
        """Write ``changes``; the decision as applied (degraded, keeping the old placement, if it fails)."""
        started = time.perf_counter()
        with self.fence() as leading:
            # Checked right before the writes: a replica that lost the lease while it observed and
            # decided must not apply (the new leader decides this interval).
            if not leading:
                log.warning("not the leader any more: the decision for %s is not applied", namespace)
                return degraded(decision, NOT_LEADER, "this replica is not the leader: nothing applied")
            try:
                written = self.reconciler.apply(namespace, changes)
            except ApiException as error:
                return degraded(decision, *api_error(error))
            except Exception as error:  # a bug: report, never crash the loop
                log.exception("applying the decision in %s failed", namespace)
                return degraded(decision, "DecisionFailed", f"{type(error).__name__}: {error}")
        message = f"{written.apply} objects applied, {written.resize} pods resized in place, {written.delete} deleted"
        return dataclasses.replace(
            decision,
            written=written,
            writes=written.total - written.delete,
            deletes=written.delete,
            reconcile_seconds=time.perf_counter() - started,
            message=message,
        )
