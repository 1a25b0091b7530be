"""Reconcile: write only what changed, resize CPU in place, delete what the plan no longer has.

Each object the operator writes carries a hash of its desired manifest; an object whose hash
matches is left alone, so a steady plan costs no API writes. For an edge Deployment the hash
leaves out the inference container's CPU: CPU follows the plan through the pods'
``resize`` subresource (in-place, no restart, no new ReplicaSet), one write per pod, and the
Deployment's template keeps the CPU it was created with. The CPU a Deployment has is read
from its live pods (:func:`current_cpu`), so a pod recreated from the (older) template is
resized to its siblings' CPU at the next interval. A CPU change smaller than
:func:`cpu_threshold` is not written at all (hysteresis) unless the node's CPU would
otherwise exceed its cores.
Where the cluster cannot resize a pod, the Deployment's template is changed instead (a
rolling restart, as without in-place resize).

New objects are applied before old ones are deleted (make before break), so a model stays
served while it moves; CPU decreases are written before increases. A call the API server
refuses for the moment (5xx, 429) is retried with exponential backoff (:func:`with_retries`);
if it still fails, the reconcile stops there and deletes nothing, so the last good placement
keeps serving.

:func:`plan_writes` decides every write from what was listed (pure, unit-tested);
:class:`Reconciler` performs them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from edgeaigc.inference.gateway.routing_table import RoutingTable
from edgeaigc.operator import constants as c
from edgeaigc.policy.quantities import millicores

HASH_ANNOTATION = "edgeaigc.io/desired-hash"
#: The container whose CPU follows the plan.
INFERENCE_CONTAINER = "inference"


@dataclasses.dataclass(frozen=True)
class WritePolicy:
    """How eagerly plan changes are written (the defaults are the operator's)."""

    in_place: bool = True
    """Resize edge pods' CPU in place; False: CPU is part of the template (a change rolls the pods)."""
    cpu_step_m: int = 50
    """Deadband: a CPU change below max(cpu_step_m, cpu_step_fraction x current) is not written.

    25 % is about three standard deviations of the plan's CPU for a model whose rate is measured
    from ~100 requests per interval (Poisson noise of 10 %, and shares that grow like the square
    root of the load under the water-filling): at 100 nodes a 10 % step still resized about half
    the pods every interval on noise alone. The node bound below keeps the deadband from
    overcommitting a node."""
    cpu_step_fraction: float = 0.25
    share_step: float = 0.01
    """Hysteresis of the routing table: a share moving less than max(share_step, share_step_fraction x old)."""
    share_step_fraction: float = 0.10


#: The operator's write policy: in-place resizes, 50m / 25 % CPU steps, 0.01 / 10 % share steps.
DEFAULT_WRITES = WritePolicy()
#: Every change written as soon as it appears, CPU in the template (the operator before in-place resize).
EAGER = WritePolicy(in_place=False, cpu_step_m=0, cpu_step_fraction=0.0, share_step=0.0, share_step_fraction=0.0)
#: Kinds the operator creates for a policy (all namespaced, all labelled with the policy).
MANAGED_KINDS: tuple[tuple[str, str], ...] = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"))

Key = tuple[str, str]  # (kind, name)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often an API call the server refuses for the moment (5xx, 429) is tried, and how long apart."""

    attempts: int = 4
    """Tries in all (the first and three retries)."""
    base_delay_s: float = 0.5
    """Wait before the first retry; doubles with each retry, capped at ``max_delay_s``."""
    max_delay_s: float = 8.0


def retryable(error: ApiException) -> bool:
    """A failure that may pass: throttling (429) or a server-side error (5xx)."""
    return error.status == 429 or (isinstance(error.status, int) and 500 <= error.status < 600)


def status_message(error: ApiException) -> str:
    """The ``message`` of the Status the API server answered with (the raw body if it is not one)."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return str(error.body or "")[:500]
    return str(body.get("message", "")) if isinstance(body, dict) else str(body)[:500]


def retry_delay(error: ApiException, retry: int, policy: RetryPolicy = RetryPolicy()) -> float:
    """Seconds before retry number ``retry`` (0-based): the server's ``Retry-After`` if it sent one, else backoff."""
    backoff = min(policy.max_delay_s, policy.base_delay_s * 2**retry)
    retry_after = (error.headers or {}).get("Retry-After")
    try:
        return min(policy.max_delay_s, max(float(retry_after), 0.0)) if retry_after is not None else backoff
    except ValueError:  # an HTTP date: not worth parsing for a few seconds
        return backoff


def with_retries(
    call: Callable[[], T],
    what: str,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on :func:`retryable` failures; other failures and the last one are raised."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except ApiException as error:
            if not retryable(error) or attempt == policy.attempts - 1:
                if retryable(error):
                    log.warning("%s: %s %s after %d tries: %s", what, error.status, error.reason, attempt + 1,
                                status_message(error))  # fmt: skip
                raise
            delay = retry_delay(error, attempt, policy)
            log.info(
                "%s: %s %s, retrying in %.1f s: %s", what, error.status, error.reason, delay, status_message(error)
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _inference_container(pod_spec: Mapping[str, Any]) -> Any:
    return next((k for k in pod_spec.get("containers") or [] if k.get("name") == INFERENCE_CONTAINER), None)


def container_cpu(pod_spec: Mapping[str, Any]) -> int | None:
    """The inference container's CPU limit in millicores (None: no such container or no limit)."""
    container = _inference_container(pod_spec)
    limit = (((container or {}).get("resources") or {}).get("limits") or {}).get("cpu")
    return None if limit is None else millicores(limit)


def is_edge_deployment(manifest: Mapping[str, Any]) -> bool:
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    return manifest.get("kind") == "Deployment" and labels.get(c.LABEL_COMPONENT) == c.COMPONENT_EDGE_INFERENCE


def _with_inference_resources(manifest: Mapping[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """``manifest`` with ``change`` applied to its inference container's ``resources``.

    Only the dictionaries on the way to the container are copied (``manifest`` is left as it is):
    a deep copy of every Deployment of a large fleet, every interval, costs more than the rest of
    the diff.
    """
    changed = {**manifest, "spec": {**manifest["spec"]}}
    template = changed["spec"]["template"] = {**changed["spec"]["template"]}
    pod_spec = template["spec"] = {**template["spec"]}
    containers = pod_spec["containers"] = list(pod_spec.get("containers") or [])
    for i, container in enumerate(containers):
        if container.get("name") == INFERENCE_CONTAINER:
            resources = {part: dict(value) for part, value in (container.get("resources") or {}).items()}
            change(resources)
            containers[i] = {**container, "resources": resources}
    return changed


def _without_cpu(manifest: Mapping[str, Any]) -> dict[str, Any]:
    def drop_cpu(resources: dict[str, Any]) -> None:
        for part in ("requests", "limits"):
            resources.get(part, {}).pop("cpu", None)

    return _with_inference_resources(manifest, drop_cpu)


def manifest_hash(manifest: Mapping[str, Any], in_place: bool = True) -> str:
    """Hash of a desired manifest; for an edge Deployment without its CPU when that is resized in place."""
    hashed = _without_cpu(manifest) if in_place and is_edge_deployment(manifest) else manifest
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: Mapping[str, Any], in_place: bool = True, digest: str | None = None) -> dict[str, Any]:
    """``manifest`` with its :func:`manifest_hash` (``digest`` if already computed) as an annotation.

    The result shares all but its ``metadata`` with ``manifest``.
    """
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        HASH_ANNOTATION: digest or manifest_hash(manifest, in_place),
    }
    return {**manifest, "metadata": metadata}


def with_template_cpu(manifest: Mapping[str, Any], cpu_m: int) -> dict[str, Any]:
    """``manifest`` with the inference container's CPU request and limit set to ``cpu_m``."""

    def set_cpu(resources: dict[str, Any]) -> None:
        for part in ("requests", "limits"):
            resources.setdefault(part, {})["cpu"] = f"{cpu_m}m"

    return _with_inference_resources(manifest, set_cpu)


def cpu_threshold(current_m: int, policy: WritePolicy = WritePolicy()) -> int:
    """Smallest CPU change worth a write from ``current_m`` millicores (hysteresis)."""
    return max(policy.cpu_step_m, int(policy.cpu_step_fraction * current_m), 1)


def cpu_changes(
    desired: Mapping[str, int],
    current: Mapping[str, int],
    node_of: Mapping[str, str],
    capacity: Mapping[str, int],
    policy: WritePolicy = WritePolicy(),
) -> dict[str, int]:
    """Which Deployments' CPU to change, and to what (pure).

    A change is written when it is at least :func:`cpu_threshold` of the current CPU. If the
    changes kept back would leave a node's CPU above its capacity, every decrease on that node is
    written too (the plan itself fits, so the node then fits).

    Args:
        desired: Deployment name -> CPU the plan wants (millicores).
        current: Deployment name -> CPU it has now (missing: a new Deployment, always written).
        node_of: Deployment name -> its edge node.
        capacity: edge node -> CPU it offers inference (millicores; missing: no bound).
    """
    write = {
        name: cpu
        for name, cpu in desired.items()
        if name not in current or abs(cpu - current[name]) >= cpu_threshold(current[name], policy)
    }
    effective = {name: write.get(name, current.get(name, cpu)) for name, cpu in desired.items()}
    by_node: dict[str, list[str]] = {}  # grouped once: 1000 nodes x 2700 Deployments scanned per node took 0.2 s
    for name in desired:
        by_node.setdefault(node_of.get(name, ""), []).append(name)
    for node, bound in capacity.items():
        on_node = by_node.get(node, [])
        if sum(effective[name] for name in on_node) > bound:
            write.update({name: desired[name] for name in on_node if current.get(name, 0) > desired[name]})
    return write


@dataclasses.dataclass(frozen=True)
class Resize:
    """An in-place CPU change of one running pod of an edge Deployment."""

    pod: str
    deployment: str
    cpu_m: int
    from_m: int | None = None
    """The pod's CPU before (None: unknown, written with the decreases)."""

    @property
    def lowers(self) -> bool:
        return self.from_m is None or self.cpu_m < self.from_m


@dataclasses.dataclass(frozen=True)
class Changes:
    """What a reconcile would do (in this order): resize pods, apply manifests, delete
    ``(apiVersion, kind, name)``."""

    apply: list[dict[str, Any]]
    delete: list[tuple[str, str, str]]
    unchanged: int
    resize: list[Resize] = dataclasses.field(default_factory=list)
    cpu: dict[str, int] = dataclasses.field(default_factory=dict)
    """Deployment name -> its new CPU, millicores (its pods are resized; not a write of its own)."""
    fallback: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Deployment name -> manifest with the new CPU in its template, applied if a pod cannot be resized."""

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.delete) + len(self.resize)


class PodIndex:
    """The live pods (terminating pods left out), found by label: a Deployment's pods in time
    proportional to the pods that share its most selective label, not to every pod listed (a
    reconcile looks up the pods of every edge Deployment, hundreds of each in a large fleet)."""

    def __init__(self, pods: Sequence[Mapping[str, Any]]) -> None:
        self._live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        self._by_label: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for pod in self._live:
            for label in (pod["metadata"].get("labels") or {}).items():
                self._by_label.setdefault(label, []).append(pod)

    def pods_of(self, deployment: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The live pods ``deployment`` selects (by its selector's labels)."""
        selector = (deployment.get("spec") or {}).get("selector", {}).get("matchLabels") or {}
        if not selector:
            return list(self._live)
        narrowest = min((self._by_label.get(label, []) for label in selector.items()), key=len)
        return [
            pod
            for pod in narrowest
            if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]


def pods_of(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] | PodIndex) -> list[Mapping[str, Any]]:
    """The live pods a Deployment selects (by its selector's labels; terminating pods left out)."""
    return (pods if isinstance(pods, PodIndex) else PodIndex(pods)).pods_of(deployment)


def reports_resources(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's kubelet reports its running containers' resources — the API server's sign that
    the node can resize it in place (it refuses a resize otherwise)."""
    return all(
        status.get("resources") is not None
        for status in (pod.get("status") or {}).get("containerStatuses") or []
        if (status.get("state") or {}).get("running") is not None
    )


def current_cpu(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] | PodIndex) -> int | None:
    """The CPU a Deployment has now: the largest of its live pods' (a pod recreated from the template
    has less until it is resized to its siblings'), else its template's (no pods yet)."""
    live = [cpu for pod in pods_of(deployment, pods) if (cpu := container_cpu(pod["spec"])) is not None]
    return max(live) if live else container_cpu(deployment["spec"]["template"]["spec"])


def plan_writes(
    desired: Sequence[Mapping[str, Any]],
    existing: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]] = (),
    capacity: Mapping[str, int] | None = None,
    policy: WritePolicy = WritePolicy(),
) -> Changes:
    """Pure diff between desired manifests and what the cluster has.

    Args:
        desired: manifests from the builders (edge Deployments with the plan's CPU in their template).
        existing: the policy's objects as listed (``kind`` and ``apiVersion`` set).
        pods: the policy's edge pods as listed.
        capacity: edge node -> CPU it offers inference, millicores (bounds the hysteresis).
        policy: in-place or not, hysteresis steps.
    """
    in_place = policy.in_place
    live_pods = PodIndex(pods)
    found = {(o["kind"], o["metadata"]["name"]): o for o in existing}
    to_apply: list[dict[str, Any]] = []
    wanted: set[Key] = set()
    unchanged = 0
    resizable: dict[str, Mapping[str, Any]] = {}  # same shape, CPU to compare
    for manifest in desired:
        key = (manifest["kind"], manifest["metadata"]["name"])
        wanted.add(key)
        current = found.get(key)
        annotations = (current or {}).get("metadata", {}).get("annotations") or {}
        digest = manifest_hash(manifest, in_place)
        same = current is not None and annotations.get(HASH_ANNOTATION) == digest
        if same and in_place and is_edge_deployment(manifest) and current_cpu(current or {}, live_pods) is not None:
            resizable[key[1]] = manifest
        elif same:
            unchanged += 1
        else:
            to_apply.append(with_hash(manifest, in_place, digest))
    desired_cpu = {
        name: cpu for name, m in resizable.items() if (cpu := container_cpu(m["spec"]["template"]["spec"])) is not None
    }
    cpu_now = {name: current_cpu(found[("Deployment", name)], live_pods) or 0 for name in desired_cpu}
    node_of = {name: m["metadata"]["labels"].get(c.LABEL_EDGE_NODE, "") for name, m in resizable.items()}
    # Edge Deployments applied whole (new models) take their CPU on the node too: what is left
    # bounds the pods resized in place, so a decrease kept back by hysteresis cannot overcommit it.
    remaining = dict(capacity or {})
    for manifest in to_apply:
        node = manifest["metadata"]["labels"].get(c.LABEL_EDGE_NODE, "")
        if is_edge_deployment(manifest) and node in remaining:
            remaining[node] -= container_cpu(manifest["spec"]["template"]["spec"]) or 0
    new_cpu = cpu_changes(desired_cpu, cpu_now, node_of, remaining, policy)
    resizes: list[Resize] = []
    fallback: dict[str, dict[str, Any]] = {}
    for name, manifest in resizable.items():
        target = new_cpu.get(name, cpu_now.get(name))
        if target is None:
            unchanged += 1
            continue
        # Pods not at the target: those of a CPU change, and pods recreated from an older template.
        deployment = found[("Deployment", name)]
        live = live_pods.pods_of(deployment)
        behind = [p for p in live if container_cpu(p["spec"]) != target]
        template_changes = not live and target != container_cpu(deployment["spec"]["template"]["spec"])
        if template_changes or not all(reports_resources(p) for p in behind):
            # The template carries the CPU. With no pod yet (at 1000 nodes the control plane made them minutes
            # after the Deployment) or none left, a pod made from the template would start at its old CPU,
            # beyond what its node now holds for it (nodes at 150-195 % of their cores were seen), and be
            # resized only after it started; no running pod rolls. On a node that cannot resize in place,
            # the Deployment rolls.
            to_apply.append(with_hash(with_template_cpu(manifest, target)))
            new_cpu.pop(name, None)
            continue
        resizes += [Resize(p["metadata"]["name"], name, target, container_cpu(p["spec"])) for p in behind]
        if name in new_cpu or behind:
            fallback[name] = with_hash(with_template_cpu(manifest, target))
        else:
            unchanged += 1
    # Decreases before increases, so a node never holds more than its cores in between.
    resizes.sort(key=lambda r: r.cpu_m - cpu_now.get(r.deployment, r.cpu_m))
    to_delete = [(found[key]["apiVersion"], key[0], key[1]) for key in sorted(found) if key not in wanted]
    return Changes(to_apply, to_delete, unchanged, resizes, new_cpu, fallback)


def changes(desired: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]) -> Changes:
    """:func:`plan_writes` without pods or node bounds (manifest diff only)."""
    return plan_writes(desired, existing)


def resize_unsupported(error: ApiException) -> bool:
    """The cluster cannot resize this pod in place (no subresource, feature off, node without support)."""
    body = str(error.body or "")
    return error.status in (404, 405) or (error.status == 422 and "resize" in body and "support" in body)


@dataclasses.dataclass
class Written:
    """API writes of one reconcile, by verb."""

    apply: int = 0
    delete: int = 0
    resize: int = 0
    fallback: int = 0
    """Deployments whose template was changed because a pod could not be resized in place."""
    step_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall-clock time of each step of :meth:`Reconciler.apply` (the benchmark's profile of a reconcile)."""

    @property
    def total(self) -> int:
        return self.apply + self.delete + self.resize

    def __iadd__(self, other: Written) -> Written:
        self.apply += other.apply
        self.delete += other.delete
        self.resize += other.resize
        self.fallback += other.fallback
        return self


class Reconciler:
    """Reads and writes the objects of one policy through the dynamic client."""

    parallel_writes: int = 8
    """Writes in flight at once within a step of :meth:`apply` (the API client keeps 5 connections per core)."""

    def __init__(
        self, api_client: ApiClient, retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.client = DynamicClient(api_client)
        self.retry = retry
        self._sleep = sleep

    def _call(self, call: Callable[[], T], what: str) -> T:
        return with_retries(call, what, self.retry, self._sleep)

    def _list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The objects of one kind matching ``selector``, each with its ``apiVersion`` and ``kind`` set."""
        resource = self.client.resources.get(api_version=api_version, kind=kind)
        listing = self._call(
            functools.partial(resource.get, namespace=namespace, label_selector=selector), f"list {kind}s"
        )
        items: list[dict[str, Any]] = listing.to_dict()["items"]
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def existing(self, namespace: str, policy_name: str) -> list[dict[str, Any]]:
        selector = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY},{c.LABEL_POLICY}={policy_name}"
        return [
            item for api_version, kind in MANAGED_KINDS for item in self._list(api_version, kind, namespace, selector)
        ]

    def edge_pods(self, namespace: str, policy_name: str) -> list[dict[str, Any]]:
        selector = f"{c.LABEL_POLICY}={policy_name},{c.LABEL_COMPONENT}={c.COMPONENT_EDGE_INFERENCE}"
        return self._list("v1", "Pod", namespace, selector)

    def _apply(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        resource = self.client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        name = manifest["metadata"]["name"]
        self._call(
            functools.partial(
                resource.server_side_apply,
                body=manifest,
                name=name,
                namespace=namespace,
                field_manager=c.FIELD_MANAGER,
                force_conflicts=True,
                serialize=False,  # the answer is not read: turning it into objects costs CPU per write
            ),
            f"apply {manifest['kind']} {name}",
        )

    def _resize_deployment(
        self, namespace: str, resizes: Sequence[Resize], fallback: Mapping[str, Any] | None, subresource: Any
    ) -> Written:
        """Resize one Deployment's pods in place; where the cluster cannot, apply ``fallback`` (once)."""
        written = Written()
        for resize in resizes:
            cpu = f"{resize.cpu_m}m"
            resources = {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}
            body = {"spec": {"containers": [{"name": INFERENCE_CONTAINER, "resources": resources}]}}
            try:
                if subresource is None:  # a cluster before in-place resize
                    raise ApiException(status=404, reason="no pods/resize subresource")
                written.resize += 1
                self._call(
                    functools.partial(
                        subresource.patch,
                        name=resize.pod,
                        namespace=namespace,
                        body=body,
                        content_type="application/strategic-merge-patch+json",
                        field_manager=c.FIELD_MANAGER,
                        serialize=False,
                    ),
                    f"resize Pod {resize.pod}",
                )
            except ApiException as error:
                if error.status == 404 and f'"{resize.pod}" not found' in str(error.body or ""):
                    continue  # the pod went away meanwhile; its replacement is resized next interval
                if not resize_unsupported(error) or fallback is None:
                    raise
                # No in-place resize here: the template carries the CPU, the Deployment rolls its pods.
                self._apply(namespace, fallback)
                written.apply += 1
                written.fallback += 1
                return written
        return written

    def _delete(self, namespace: str, api_version: str, kind: str, name: str) -> Written:
        resource = self.client.resources.get(api_version=api_version, kind=kind)
        try:
            self._call(
                functools.partial(
                    resource.delete,
                    name=name,
                    namespace=namespace,
                    body={"propagationPolicy": "Background"},
                    serialize=False,
                ),
                f"delete {kind} {name}",
            )
        except ApiException as error:
            if error.status != 404:  # gone already (a retried delete whose first try went through)
                raise
        return Written(delete=1)

    def _all(self, calls: Sequence[Callable[[], Written]], written: Written) -> None:
        """Run independent writes ``parallel_writes`` at a time, adding what they wrote to ``written``.

        Every call runs (or fails) before this returns; the first failure is then raised, so the
        steps after it (the deletes) do not run.
        """
        if not calls:
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.parallel_writes)) as pool:
            futures = [pool.submit(call) for call in calls]
            concurrent.futures.wait(futures)
        failure: BaseException | None = None
        for future in futures:
            if (error := future.exception()) is not None:
                failure = failure or error
            else:
                written += future.result()
        if failure is not None:
            raise failure

    def apply(self, namespace: str, plan: Changes) -> Written:
        """Resize (falling back to a template change), apply, then delete.

        The writes of one step are independent and go ``parallel_writes`` at a time (each takes a
        round trip to the API server: one after the other, a hundred of them take seconds); the
        steps stay in order: CPU decreases, the site peers of new replicas (before the pods that read
        them start), then CPU increases together with the Deployments and Services, the routing table
        (once what it routes to exists), deletes (make before break). Increases and new replicas
        share a step: both need only the decreases before them (the plan fits each node once all of
        its changes are made), and one wait instead of two saved up to 1.4 s of a 1000-node reconcile.
        """
        written = Written()
        pods = self.client.resources.get(api_version="v1", kind="Pod")
        subresource = pods.subresources.get("resize")

        def resizes(lowering: bool) -> list[Callable[[], Written]]:
            by_deployment: dict[str, list[Resize]] = {}
            for resize in plan.resize:
                if resize.lowers == lowering:
                    by_deployment.setdefault(resize.deployment, []).append(resize)
            return [
                functools.partial(
                    self._resize_deployment, namespace, pod_resizes, plan.fallback.get(deployment), subresource
                )
                for deployment, pod_resizes in by_deployment.items()
            ]

        def applies(step: int) -> list[Callable[[], Written]]:
            return [functools.partial(self._apply_counted, namespace, m) for m in plan.apply if apply_step(m) == step]

        self._step("lower", resizes(lowering=True), written)
        self._step("peers", applies(0), written)
        self._step("raise+apply", resizes(lowering=False) + applies(1), written)
        self._step("routing", applies(2), written)
        self._step("delete", [functools.partial(self._delete, namespace, *key) for key in plan.delete], written)
        return written

    def _step(self, name: str, calls: Sequence[Callable[[], Written]], written: Written) -> None:
        started = time.perf_counter()
        try:
            self._all(calls, written)
        finally:
            written.step_seconds[name] = time.perf_counter() - started

    def _apply_counted(self, namespace: str, manifest: Mapping[str, Any]) -> Written:
        self._apply(namespace, manifest)
        return Written(apply=1)


def apply_step(manifest: Mapping[str, Any]) -> int:
    """When a manifest is applied: 0 the site peers ConfigMap (a new replica's fetch-model reads it when
    its pod starts), 1 Deployments and Services, 2 other ConfigMaps (the routing table, once what it
    routes to exists)."""
    if manifest["kind"] != "ConfigMap":
        return 1
    labels = manifest.get("metadata", {}).get("labels") or {}
    return 0 if labels.get(c.LABEL_COMPONENT) == c.COMPONENT_PEERS else 2


def routing_table_to_write(
    old: RoutingTable | None, new: RoutingTable, policy: WritePolicy = WritePolicy()
) -> RoutingTable:
    """The routing table to keep in the cluster (pure).

    ``old`` itself while ``new`` routes the same cameras and models to the same endpoints and
    moves no compute or bandwidth share by more than the hysteresis step; else ``new`` with the
    next generation (1 without an old table).
    """
    if old is None:
        return dataclasses.replace(new, generation=1)

    def _share_moved(before: float, after: float) -> bool:
        step = max(policy.share_step, policy.share_step_fraction * abs(before))
        return after != before if step == 0 else abs(after - before) >= step

    same = (
        old.cloud == new.cloud
        and old.edge_nodes.keys() == new.edge_nodes.keys()
        and all(
            old.edge_nodes[node].models.keys() == routes.models.keys()
            and old.edge_nodes[node].node_name == routes.node_name
            and old.edge_nodes[node].camera_bandwidth_share.keys() == routes.camera_bandwidth_share.keys()
            and all(
                old.edge_nodes[node].models[model].endpoints == local.endpoints
                and not _share_moved(old.edge_nodes[node].models[model].compute_share, local.compute_share)
                for model, local in routes.models.items()
            )
            and not any(
                _share_moved(old.edge_nodes[node].camera_bandwidth_share[camera], share)
                for camera, share in routes.camera_bandwidth_share.items()
            )
            for node, routes in new.edge_nodes.items()
        )
    )
    return old if same else dataclasses.replace(new, generation=old.generation + 1)
