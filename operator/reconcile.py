"""Reconcile: server-side apply of what changed, then delete what the plan no longer has.

Each object the operator writes carries a hash of its desired manifest; an object whose hash
matches is left alone, so a steady plan costs no API writes. New objects are applied before
old ones are deleted (make before break), so a model stays served while it moves.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient

from edgeaigc.operator import constants as c

HASH_ANNOTATION = "edgeaigc.io/desired-hash"
#: Kinds the operator creates for a policy (all namespaced, all labelled with the policy).
MANAGED_KINDS: tuple[tuple[str, str], ...] = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"))


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    stamped = copy.deepcopy(dict(manifest))
    stamped["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = manifest_hash(manifest)
    return stamped


@dataclasses.dataclass(frozen=True)
class Changes:
    """What a reconcile would do: objects to apply and ``(kind, name)`` to delete."""

    apply: list[dict[str, Any]]
    delete: list[tuple[str, str, str]]  # (apiVersion, kind, name)
    unchanged: int


def changes(desired: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]]) -> Changes:
    """Pure diff between desired manifests and the objects found in the cluster."""
    found = {(o["kind"], o["metadata"]["name"]): o for o in existing}
    to_apply, wanted, unchanged = [], set(), 0
    for manifest in desired:
        key = (manifest["kind"], manifest["metadata"]["name"])
        wanted.add(key)
        current = found.get(key)
        annotations = (current or {}).get("metadata", {}).get("annotations") or {}
        if current is not None and annotations.get(HASH_ANNOTATION) == manifest_hash(manifest):
            unchanged += 1
        else:
            to_apply.append(with_hash(manifest))
    to_delete = [(found[key]["apiVersion"], key[0], key[1]) for key in sorted(found) if key not in wanted]
    return Changes(to_apply, to_delete, unchanged)


class Reconciler:
    """Reads and writes the objects of one policy through the dynamic client."""

    def __init__(self, api_client: ApiClient) -> None:
        self.client = DynamicClient(api_client)

    def existing(self, namespace: str, policy_name: str) -> list[dict[str, Any]]:
        selector = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY},{c.LABEL_POLICY}={policy_name}"
        found = []
        for api_version, kind in MANAGED_KINDS:
            resource = self.client.resources.get(api_version=api_version, kind=kind)
            listing = resource.get(namespace=namespace, label_selector=selector)
            for item in listing.to_dict()["items"]:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                found.append(item)
        return found

    def apply(self, namespace: str, plan: Changes) -> tuple[int, int]:
        """Apply then delete; return ``(writes, deletes)``."""
        for manifest in plan.apply:
            resource = self.client.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
            resource.server_side_apply(
                body=manifest,
                name=manifest["metadata"]["name"],
                namespace=namespace,
                field_manager=c.FIELD_MANAGER,
                force_conflicts=True,
            )
        for api_version, kind, name in plan.delete:
            resource = self.client.resources.get(api_version=api_version, kind=kind)
            resource.delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"})
        return len(plan.apply), len(plan.delete)
