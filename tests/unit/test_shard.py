"""Shards: the label selector, which nodes and cameras a policy decides for, and that two shards' writes never meet."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edgeaigc.operator.decide import PolicyCache, decide
from edgeaigc.operator.status import OVERLAPPING_SHARDS, policy_status
from edgeaigc.policy.crd_defaults import with_defaults
from edgeaigc.policy.shard import (
    InvalidSelector,
    older_overlaps,
    selected_nodes,
    selector_matches,
    shard_cameras,
)
from tests.unit.test_operator_decide import NOW, snapshot

LABELS = {"site": "north", "tier": "pi"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"site": "north"}}, True),
        ({"matchLabels": {"site": "south"}}, False),
        ({"matchLabels": {"site": "north", "zone": "a"}}, False),
        ({"matchExpressions": [{"key": "site", "operator": "In", "values": ["south", "north"]}]}, True),
        ({"matchExpressions": [{"key": "site", "operator": "In", "values": ["south"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "site", "operator": "NotIn", "values": ["north"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        # Requirements are AND-ed, with matchLabels too.
        (
            {
                "matchLabels": {"tier": "pi"},
                "matchExpressions": [{"key": "site", "operator": "In", "values": ["north"]}],
            },
            True,
        ),
        (
            {
                "matchLabels": {"tier": "pi"},
                "matchExpressions": [{"key": "site", "operator": "DoesNotExist"}],
            },
            False,
        ),
    ],
)
def test_a_label_selector_matches_as_kubernetes_does(selector: dict[str, Any] | None, matches: bool) -> None:
    assert selector_matches(selector, LABELS) is matches


@pytest.mark.parametrize(
    "requirement",
    [
        {"key": "site", "operator": "In", "values": []},
        {"key": "site", "operator": "Exists", "values": ["north"]},
        {"key": "site", "operator": "Equals", "values": ["north"]},
        {"operator": "Exists"},
    ],
)
def test_an_invalid_requirement_is_refused(requirement: dict[str, Any]) -> None:
    with pytest.raises(InvalidSelector):
        selector_matches({"matchExpressions": [requirement]}, LABELS)


def _node(name: str, site: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"site": site}}, "spec": {"nodeName": name}}


def _policy(name: str, created: str, site: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {} if site is None else {"edgeNodeSelector": {"matchLabels": {"site": site}}}
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


NODES = [_node("pi-0", "north"), _node("pi-1", "north"), _node("pi-2", "south")]


def test_a_policy_selects_its_nodes_and_their_cameras() -> None:
    assert selected_nodes(_policy("all", "t", None), NODES) == ["pi-0", "pi-1", "pi-2"]
    assert selected_nodes(_policy("north", "t", "north"), NODES) == ["pi-0", "pi-1"]
    cameras = [
        {"metadata": {"name": u}, "spec": {"edgeNode": n}} for u, n in (("a", "pi-0"), ("b", "pi-2"), ("c", "gone"))
    ]
    # A camera naming no EdgeNode stays in every shard (reported as unattached, placed nowhere).
    assert [u["metadata"]["name"] for u in shard_cameras(NODES, ["pi-0", "pi-1"], cameras)] == ["a", "c"]


def test_only_the_younger_of_two_overlapping_policies_is_held() -> None:
    north = _policy("north", "2026-12-01T10:00:00Z", "north")
    south = _policy("south", "2026-12-01T10:00:00Z", "south")
    everything = _policy("everything", "2026-12-02T10:00:00Z", None)
    policies = [everything, north, south]
    assert older_overlaps(north, policies, NODES) == older_overlaps(south, policies, NODES) == []
    held = older_overlaps(everything, policies, NODES)
    assert [(o.policy, o.nodes) for o in held] == [("north", ("pi-0", "pi-1")), ("south", ("pi-2",))]
    # Same age: the name decides, the same way for both.
    twin = _policy("a-north", "2026-12-01T10:00:00Z", "north")
    assert older_overlaps(twin, [twin, north], NODES) == []
    assert [o.policy for o in older_overlaps(north, [twin, north], NODES)] == ["a-north"]


# --- two shards decided on the same fleet (tests/unit/test_operator_decide's two nodes, one per shard) ---


def _shard(name: str, node: str, created: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    spec = {"algorithm": "lru", "intervalSeconds": 30, "churnLimit": 10}
    spec["edgeNodeSelector"] = {"matchLabels": {"edgeaigc.io/shard": node}}  # type: ignore[assignment]
    return {
        "metadata": {"name": name, "namespace": "city", "uid": f"u-{name}", "creationTimestamp": created},
        "spec": with_defaults("PlacementPolicy", spec),
    }


def _labelled(base: Any) -> list[dict[str, Any]]:
    """The snapshot's EdgeNodes, each labelled with its own shard."""
    return [
        {**n, "metadata": {**n["metadata"], "labels": {"edgeaigc.io/shard": n["metadata"]["name"]}}}
        for n in base.edge_nodes
    ]


def _written_names(policy: dict[str, Any], policies: list[dict[str, Any]]) -> tuple[set[tuple[str, str]], Any]:
    base = snapshot()
    decision, changes = decide(
        dataclasses.replace(base, policy=policy, edge_nodes=_labelled(base), policies=policies), PolicyCache()
    )
    assert decision.degraded_reason is None and changes is not None
    return {(m["kind"], m["metadata"]["name"]) for m in changes.apply}, decision


def test_two_shards_place_their_own_nodes_and_never_write_the_same_object() -> None:
    a, b = _shard("shard-a", "pi-0"), _shard("shard-b", "pi-1")
    written_a, decision_a = _written_names(a, [a, b])
    written_b, decision_b = _written_names(b, [a, b])
    assert set(decision_a.placement) == {"pi-0"} and set(decision_b.placement) == {"pi-1"}
    assert decision_a.placement["pi-0"] and decision_b.placement["pi-1"]
    # The cloud replicas (one per model in each shard) are the objects both would otherwise write.
    assert written_a and written_b and not written_a & written_b
    # Node status only for the shard's nodes; each shard's InferenceModel status under its own key.
    assert set(decision_a.edge_node_status) == {"pi-0"} and set(decision_b.edge_node_status) == {"pi-1"}
    for model, status in decision_a.model_status.items():
        assert set(status) == {"shards"} and set(status["shards"]) == {"shard-a"}
        assert status["shards"]["shard-a"]["cachedOn"] in ([], ["pi-0"])
        assert set(decision_b.model_status[model]["shards"]) == {"shard-b"}


def test_a_shard_writes_no_model_status_the_model_already_has_for_it() -> None:
    a, b = _shard("shard-a", "pi-0"), _shard("shard-b", "pi-1")
    _, first = _written_names(a, [a, b])
    base = snapshot()
    # The models carry shard-a's entry as written, and another shard's entry it must not care about.
    models = [
        {
            **m,
            "status": {
                "shards": {**first.model_status[m["metadata"]["name"]]["shards"], "shard-b": {"cachedOn": ["pi-1"]}}
            },
        }
        for m in base.models
    ]
    policies = PolicyCache()
    view = dataclasses.replace(base, policy=a, edge_nodes=_labelled(base), policies=[a, b], models=models)
    decision, _ = decide(view, policies)
    assert decision.placement == first.placement and decision.model_status == {}


def test_a_policy_without_selector_keeps_its_names_and_status_fields() -> None:
    decision, changes = decide(snapshot(), PolicyCache())
    assert changes is not None
    assert "edgeaigc-cloud-det" in {m["metadata"]["name"] for m in changes.apply}
    assert all("cachedOn" in status for status in decision.model_status.values())


def test_a_younger_overlapping_shard_is_held_and_writes_nothing() -> None:
    a, b = _shard("shard-a", "pi-0"), _shard("shard-b", "pi-1")
    greedy = {
        "metadata": {"name": "greedy", "namespace": "city", "uid": "u-g", "creationTimestamp": "2026-12-02T10:00:00Z"},
        "spec": with_defaults(
            "PlacementPolicy",
            {
                "algorithm": "lru",
                "edgeNodeSelector": {"matchExpressions": [{"key": "edgeaigc.io/shard", "operator": "Exists"}]},
            },
        ),
    }
    base = snapshot()
    decision, changes = decide(
        dataclasses.replace(base, policy=greedy, edge_nodes=_labelled(base), policies=[a, b, greedy]), PolicyCache()
    )
    assert changes is None and decision.degraded_reason == OVERLAPPING_SHARDS
    assert "shard-a" in decision.message and "pi-0" in decision.message and "shard-b" in decision.message
    assert decision.edge_node_status == {} and decision.model_status == {}
    ready = next(c for c in policy_status(decision, {}, NOW)["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == OVERLAPPING_SHARDS
    # The older shards go on deciding.
    assert _written_names(a, [a, b, greedy])[1].placement["pi-0"]


def test_an_invalid_selector_degrades_the_policy() -> None:
    policy = _shard("bad", "pi-0")
    policy["spec"]["edgeNodeSelector"] = {"matchExpressions": [{"key": "x", "operator": "In"}]}
    decision, changes = decide(snapshot(policy=policy), PolicyCache())
    assert changes is None and decision.degraded_reason == "InvalidSelector"
