"""kopf handlers: thin wiring of the decision loop, status, events and metrics.

One daemon per PlacementPolicy runs :class:`~edgeaigc.operator.loop.DecisionLoop` every
``spec.intervalSeconds``; everything it decides is written to the policy's status, its
EdgeNodes' and InferenceModels' status, and as events. Deleting a policy needs no handler:
owner references let the garbage collector remove what it created.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from edgeaigc.operator import constants as c
from edgeaigc.operator import metrics
from edgeaigc.operator.decide import Decision
from edgeaigc.operator.leader import Fence, unfenced
from edgeaigc.operator.loop import DecisionLoop
from edgeaigc.operator.object_cache import ObjectCaches
from edgeaigc.operator.status import policy_status
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.guard import GuardStep

log = logging.getLogger(__name__)
_MERGE = "application/merge-patch+json"


def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


def operator_settings() -> kopf.OperatorSettings:
    """How kopf runs this operator (given to ``kopf.run``; the peering is given with it)."""
    settings = kopf.OperatorSettings()
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{c.GROUP}/finalizer"
    # No namespace/CRD scans: the operator watches the namespaces it is given, and least-privilege RBAC
    # (the chart's Roles) does not let it list namespaces; scanning would retry 403s for ~50 s first.
    settings.scanning.disabled = True
    return settings


@kopf.on.startup()
def connect(memo: kopf.Memo, **_: Any) -> None:
    memo["api_client"] = api_client()
    # One set of watch-based caches for the process: the policies of a namespace share its watches.
    memo["object_caches"] = ObjectCaches(memo["api_client"])


@kopf.on.cleanup()
def stop_caches(memo: kopf.Memo, **_: Any) -> None:
    if "object_caches" in memo:
        memo["object_caches"].close()


def _patch_status(api: client.CustomObjectsApi, namespace: str, plural: str, name: str, status: dict[str, Any]) -> None:
    try:
        api.patch_namespaced_custom_object_status(
            c.GROUP, c.VERSION, namespace, plural, name, {"status": status}, _content_type=_MERGE
        )
    except ApiException as error:
        if error.status != 404:  # the object went away meanwhile: nothing to report on
            raise


def write_results(
    api_client_: client.ApiClient, policy: dict[str, Any], decision: Decision, fence: Fence = unfenced
) -> bool:
    """Status of the policy, its EdgeNodes and InferenceModels; False (nothing written) when fenced off."""
    api = client.CustomObjectsApi(api_client_)
    namespace, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
    now = datetime.datetime.now(datetime.UTC)
    with fence() as leading:
        if not leading:  # the new leader reports this interval; a stale status would overwrite its
            return False
        _patch_status(api, namespace, c.PLURAL_POLICIES, name, policy_status(decision, policy.get("status") or {}, now))
        if decision.degraded_reason or decision.dry_run:
            return True
        for node, status in decision.edge_node_status.items():
            _patch_status(api, namespace, c.PLURAL_EDGE_NODES, node, status)
        for model, status in decision.model_status.items():
            _patch_status(api, namespace, c.PLURAL_MODELS, model, status)
    return True


def record(body: kopf.Body, decision: Decision) -> None:
    """Metrics and Kubernetes events for one decision (events are attached to the policy)."""
    name = body["metadata"]["name"]
    metrics.DECISION_SECONDS.labels(name).observe(decision.decision_seconds)
    metrics.DECISIONS.labels(name, decision.degraded_reason or "Decided").inc()
    metrics.DEGRADED.labels(name).set(1 if decision.degraded_reason else 0)
    if decision.reconcile_seconds:
        metrics.RECONCILE_SECONDS.labels(name).observe(decision.reconcile_seconds)
    written = decision.written
    for verb, count in (
        ("apply", written.apply),
        ("delete", written.delete),
        ("resize", written.resize),
    ):
        metrics.API_WRITES.labels(name, verb).inc(count)
    metrics.RESIZE_FALLBACKS.labels(name).inc(written.fallback)
    if decision.guard is not None:
        record_guard(body, decision.guard)
        metrics.GUARD_SECONDS.labels(name, "counterfactuals").observe(decision.counterfactual_seconds)
    record_learning(body, decision)
    if decision.degraded_reason:
        kopf.warn(body, reason=decision.degraded_reason, message=decision.message)
        return
    verb = "would cache" if decision.dry_run else "cached"
    for node, model in decision.newly_cached:
        kopf.info(body, reason="ModelCached", message=f"{model} {verb} on {node}")
    for node, model in decision.evicted:
        kopf.info(
            body, reason="ModelEvicted", message=f"{model} {'would leave' if decision.dry_run else 'left'} {node}"
        )
    for warning in decision.warnings:
        kopf.warn(body, reason="CameraUnattached", message=warning)


def record_learning(body: kopf.Body, decision: Decision) -> None:
    """The recording's metrics, and an event when a candidate actor was judged."""
    name = body["metadata"]["name"]
    if decision.recorded:
        metrics.RECORDED_TRANSITIONS.labels(name).inc(decision.recorded)
    if decision.recording_seconds:
        metrics.RECORDING_SECONDS.labels(name).observe(decision.recording_seconds)
    for part, _ in decision.learning_errors:
        metrics.RECORDING_ERRORS.labels(name, part).inc()
    promotion = decision.promotion
    # A candidate that waits or could not be judged is judged again next interval: the condition
    # ActorPromotion says why, without an event every interval.
    if promotion is None or not promotion.final:
        return
    metrics.PROMOTIONS.labels(name, promotion.outcome).inc()
    if promotion.promoted:
        kopf.info(body, reason="ActorPromoted", message=promotion.message)
    else:
        kopf.warn(body, reason="ActorRefused", message=promotion.message)


def record_guard(body: kopf.Body, step: GuardStep) -> None:
    """The guard's metrics, and an event when it hands control over."""
    name = body["metadata"]["name"]
    metrics.POLICY_FALLBACK.labels(name).set(1 if step.fallback else 0)
    metrics.GUARD_SECONDS.labels(name, "decision").observe(step.seconds)
    for candidate, value in (step.means or {}).items():
        metrics.GUARD_OBJECTIVE.labels(name, candidate).set(value)
    if step.switched:
        metrics.GUARD_SWITCHES.labels(name, step.in_control).inc()
        if step.fallback:
            kopf.warn(body, reason="PolicyFallback", message=step.choice.message)
        else:
            kopf.info(body, reason="PolicyRestored", message=step.choice.message)


@kopf.daemon(c.GROUP, c.VERSION, c.PLURAL_POLICIES, cancellation_timeout=5.0)
async def decision_loop(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Decide, apply, report; then wait ``spec.intervalSeconds`` (read afresh every time)."""
    api: client.ApiClient = memo["api_client"]
    # With --leader-elect the command puts the elector's fence into the memo; without it, none.
    fence: Fence = memo.get("fence", unfenced)
    # With --record-dir the command puts the learning settings into the memo (recording, promotion).
    loop = DecisionLoop(api, fence=fence, caches=memo.get("object_caches"), learning=memo.get("learning"))
    try:
        await _decide_every_interval(body, api, fence, loop, logger)
    finally:  # the policy was deleted or the operator stops
        loop.close()


async def _decide_every_interval(
    body: kopf.Body, api: client.ApiClient, fence: Fence, loop: DecisionLoop, logger: kopf.Logger
) -> None:
    while True:
        policy = {
            "metadata": dict(body["metadata"]),
            "spec": dict(body["spec"]),
            "status": dict(body.get("status") or {}),
        }
        decision = await asyncio.to_thread(loop.run_once, policy)
        try:
            written = await asyncio.to_thread(write_results, api, policy, decision, fence)
        except ApiException as error:
            logger.warning(f"could not write status: {error.status} {error.reason}")
            written = True  # a failed status write still reports the decision
        if not written:
            logger.warning("not the leader any more: no status, events or metrics for this decision")
        elif decision.degraded_reason:
            record(body, decision)
            logger.warning(f"degraded ({decision.degraded_reason}): {decision.message}")
        else:
            record(body, decision)
            cached = sum(len(models) for models in decision.placement.values())
            logger.info(
                f"decided in {decision.decision_seconds * 1000:.0f} ms: {cached} models cached; {decision.message}"
            )
        await asyncio.sleep(float(with_defaults("PlacementPolicy", body["spec"])["intervalSeconds"]))
