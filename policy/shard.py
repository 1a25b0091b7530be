"""Shards: which EdgeNodes (and Cameras) a PlacementPolicy decides for, and which policies overlap.

A fleet too large for one PlacementPolicy is split into several over disjoint node sets, each
chosen by ``spec.edgeNodeSelector`` — a Kubernetes label selector (metav1.LabelSelector:
``matchLabels`` and ``matchExpressions``) over the EdgeNodes' labels. A policy without one
selects every EdgeNode of its namespace, as before shards existed. A camera belongs to the shard
of the EdgeNode its ``spec.edgeNode`` names.

Two policies that select the same EdgeNode overlap. The younger of the two (later
``creationTimestamp``, then name) is *held*: it decides and writes nothing until the overlap is
gone, so a misconfigured new shard never moves or deletes the placement an older one runs.
Both the operator and the traffic twin (which must not import the operator) read the fleet this
way, so it lives here. Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

Resource = Mapping[str, Any]
Camera = TypeVar("Camera", bound=Mapping[str, Any])

#: The operators of a selector's ``matchExpressions`` (as in metav1.LabelSelectorRequirement).
SET_OPERATORS = ("In", "NotIn")
EXISTENCE_OPERATORS = ("Exists", "DoesNotExist")


class InvalidSelector(ValueError):
    """A label selector the API server's schema should have refused (a hand-made object, an old CRD)."""


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy a metav1.LabelSelector (every requirement, AND-ed).

    ``None`` or an empty selector matches everything (the PlacementPolicy's "all EdgeNodes").

    Raises:
        InvalidSelector: an unknown operator, ``In``/``NotIn`` without values, ``Exists``/``DoesNotExist``
            with values.
    """
    labels = labels or {}
    for key, value in ((selector or {}).get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in (selector or {}).get("matchExpressions") or []:
        if not _requirement_holds(requirement, labels):
            return False
    return True


def _requirement_holds(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = requirement.get("key"), requirement.get("operator"), requirement.get("values") or []
    if not key:
        raise InvalidSelector(f"a matchExpressions entry has no key: {dict(requirement)}")
    if operator in SET_OPERATORS:
        if not values:
            raise InvalidSelector(f"operator {operator} of key {key!r} needs values")
        inside = key in labels and labels[key] in values
        return inside if operator == "In" else not inside
    if operator in EXISTENCE_OPERATORS:
        if values:
            raise InvalidSelector(f"operator {operator} of key {key!r} takes no values")
        return (key in labels) == (operator == "Exists")
    raise InvalidSelector(f"unknown operator {operator!r} of key {key!r} (In, NotIn, Exists, DoesNotExist)")


def _name(resource: Resource) -> str:
    return str(resource["metadata"]["name"])


def is_shard(policy: Resource) -> bool:
    """Whether the policy has ``spec.edgeNodeSelector`` (then the objects every shard would otherwise
    share, the per-model cloud replicas and the InferenceModels' status, are its own)."""
    return (policy.get("spec") or {}).get("edgeNodeSelector") is not None


def selected_nodes(policy: Resource, edge_nodes: Sequence[Resource]) -> list[str]:
    """The names of the EdgeNodes ``policy`` decides for (its selector over their labels), sorted."""
    selector = (policy.get("spec") or {}).get("edgeNodeSelector")
    return sorted(_name(n) for n in edge_nodes if selector_matches(selector, n["metadata"].get("labels")))


def shard_cameras(edge_nodes: Sequence[Resource], selected: Sequence[str], cameras: Sequence[Camera]) -> list[Camera]:
    """The cameras of the shard: those attached to a selected EdgeNode, and those naming no EdgeNode
    at all (every shard reports them as unattached; they are placed nowhere)."""
    known, chosen = {_name(n) for n in edge_nodes}, set(selected)
    return [c for c in cameras if c["spec"].get("edgeNode") in chosen or c["spec"].get("edgeNode") not in known]


def _age_key(policy: Resource) -> tuple[str, str]:
    # RFC 3339 timestamps in UTC with the same precision sort as strings; the name breaks ties.
    return (str(policy["metadata"].get("creationTimestamp") or ""), _name(policy))


@dataclasses.dataclass(frozen=True)
class Overlap:
    """An older policy that selects some of this policy's EdgeNodes."""

    policy: str
    nodes: tuple[str, ...]


def older_overlaps(policy: Resource, policies: Sequence[Resource], edge_nodes: Sequence[Resource]) -> list[Overlap]:
    """The older policies of the namespace that select EdgeNodes ``policy`` selects too.

    Non-empty: ``policy`` is held (it writes nothing). A policy being deleted still counts: its
    objects stay until the garbage collector removes them. A policy whose own selector is invalid
    is skipped here (it is degraded on its own).
    """
    mine = set(selected_nodes(policy, edge_nodes))
    overlaps = []
    for other in sorted(policies, key=_age_key):
        if _name(other) == _name(policy) or _age_key(other) >= _age_key(policy):
            continue
        try:
            shared = mine.intersection(selected_nodes(other, edge_nodes))
        except InvalidSelector:
            continue
        if shared:
            overlaps.append(Overlap(_name(other), tuple(sorted(shared))))
    return overlaps


def overlap_message(overlaps: Sequence[Overlap], shown: int = 10) -> str:
    """What the held policy's condition says: the older policies and the EdgeNodes they share."""
    parts = []
    for overlap in overlaps:
        nodes = ", ".join(overlap.nodes[:shown]) + (
            f" and {len(overlap.nodes) - shown} more" if len(overlap.nodes) > shown else ""
        )
        parts.append(f"PlacementPolicy {overlap.policy} (older) also selects EdgeNode(s) {nodes}")
    return "; ".join(parts) + ": this policy is held (nothing decided or written) until the selectors are disjoint"
