"""The counterfactual guard end to end: a deliberately bad actor loses control to a heuristic.

The traffic-city fleet runs a TD3 PlacementPolicy whose actor is built by hand (city_fleet.py): the shipped network
shape with its cache head set so that every (node, model) scores -1, i.e. an actor that caches
nothing and sends every request to the cloud. The twin plays the gateways, Prometheus scrapes
them, the operator runs as a real process. The guard must see within its window that a heuristic
would have done better, hand it control (condition ``PolicyFallback`` True, an event, the metric),
and the placement must become that heuristic's: models cached where before there were none. Then
the ConfigMap gets an actor that keeps the placement it finds (the heuristic's): the guard starts
afresh with it in control and, scored against the same heuristics, it keeps control. (The shipped
traffic-city actor is no such good actor here: at 5 s intervals in the twin it trailed myopic by
about 60 % when this test was written, and the guard rightly took control from it.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeaigc.cluster.local import ClusterState
from edgeaigc.policy.guard import GUARD_CANDIDATES
from tests.e2e.city_fleet import CityPolicy, build_actor, free_port, operator_running, start_city
from tests.e2e.conftest import Kubectl, wait_for

NAMESPACE = "guard-e2e"
INTERVAL_S = 5
# Myopic is the only heuristic here. The recency ones (lru, lfu) follow the twin's drifting demand and download
# on every change. In a CI run (2026-12-07) lru took control from the bad actor, and within its dwell it trailed
# the bad actor's all-cloud track by the margin. The learned policy then took control back and evicted
# everything, every 7 intervals. The guard's rules allow that (a learned policy ahead of the one in control
# takes control back even when another heuristic is ahead of it), but this test is about the hand-over and
# the keep, not about which heuristic wins.
GUARD = {"margin": 0.05, "windowIntervals": 3, "minDwellIntervals": 3, "candidates": ["myopic"]}
KEEPER_MARGIN = 0.5


class Fleet(CityPolicy):
    def __init__(self, kubectl: Kubectl, metrics_port: int, good_actor: Path) -> None:
        super().__init__(kubectl, NAMESPACE, metrics_port)
        self.good_actor = good_actor


@pytest.fixture(scope="module")
def fleet(cluster: ClusterState, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("guard-e2e")
    bad_actor = build_actor(logs / "caches-nothing.onnx", keeps_the_placement=False)
    good_actor = build_actor(logs / "keeps-the-placement.onnx", keeps_the_placement=True)
    twin = start_city(cluster, kubectl, NAMESPACE, bad_actor, GUARD, INTERVAL_S, logs)
    port = free_port()
    arguments = ["operator", "-n", NAMESPACE, "--metrics-port", str(port), "--liveness-port", "0"]
    with operator_running(cluster, kubectl, NAMESPACE, twin, arguments, logs):
        yield Fleet(kubectl, port, good_actor)


def test_a_bad_actor_loses_control_to_a_heuristic_within_the_window(fleet: Fleet, kubectl: Kubectl) -> None:
    wait_for(lambda: fleet.condition("Ready").get("status") == "True", 90, "the first decision")
    first = time.monotonic()
    assert not fleet.placed(), "the bad actor caches nothing"
    # Window 3 + the decision that fills it, plus a slow interval of slack.
    fallback = wait_for(
        lambda: (c := fleet.condition("PolicyFallback")).get("status") == "True" and c,
        (GUARD["windowIntervals"] + 3) * INTERVAL_S + 10,
        "PolicyFallback True",
    )
    switched_after = time.monotonic() - first
    assert fallback["reason"] == "TrailingBaseline"
    status = fleet.policy()["status"]
    in_control = status["guard"]["inControl"]
    assert in_control in GUARD_CANDIDATES
    assert f"td3 trails {in_control} by" in fallback["message"]
    objective = {name: float(value) for name, value in status["guard"]["objective"].items()}
    assert objective["td3"] > (1 + GUARD["margin"]) * objective[in_control]
    # The heuristic's placement replaces caching nothing (models on the nodes, their pods created).
    placed = wait_for(fleet.placed, 3 * INTERVAL_S, "the heuristic's placement")
    print(
        f"guard switched to {in_control} {switched_after:.1f} s after the first decision "
        f"(interval {INTERVAL_S} s, window {GUARD['windowIntervals']}); placed {len(placed)} models; "
        f"objective {objective}"
    )
    # kopf posts events from a queue of its own: they may come a moment after the status.
    wait_for(
        lambda: (
            f"td3 trails {in_control}"
            in kubectl.run("get", "events", "-n", NAMESPACE, "--field-selector", "reason=PolicyFallback").stdout
        ),
        3 * INTERVAL_S,
        "the PolicyFallback event",
    )
    assert fleet.metric('edgeaigc_policy_fallback{policy="city"}') == 1.0
    assert fleet.metric(f'edgeaigc_policy_guard_objective{{candidate="{in_control}",policy="city"}}') is not None
    # It stays with the heuristic: the actor still caches nothing.
    time.sleep(2 * INTERVAL_S)
    assert fleet.condition("PolicyFallback")["status"] == "True"


def test_an_actor_as_good_as_the_best_heuristic_keeps_control(fleet: Fleet, kubectl: Kubectl) -> None:
    # The heuristic in control has placed models by now; an actor that keeps that placement is as
    # good as it (better than the rest) as long as demand does not drift far. A new actor in the
    # same ConfigMap: the guard starts afresh with it in control and its tracks from the placement.
    # Let the heuristic finish building its placement (churn limit 2 a node and interval) first: until
    # it stops growing. Not until it stands still: a heuristic follows the twin's drifting demand, and
    # in a CI run (2026-12-07) it went 30, 15, 14, 13, 12 models and never stood still for 3 intervals.
    seen: list[int] = []

    def built() -> bool:
        seen.append(len(fleet.placed()))
        time.sleep(INTERVAL_S)
        return len(seen) >= 3 and 0 < seen[-1] <= seen[-2] <= seen[-3]

    wait_for(built, 12 * INTERVAL_S, "the heuristic's placement to stop growing")
    # A keeper is only as good as the heuristic while demand stays put, and the twin's demand drifts:
    # the keeper was 3 % behind myopic at worst in four runs, but 12.9 % behind lru in a CI run
    # (2026-12-06). What this test checks is the hysteresis: a policy within the margin of the best
    # keeps control. So the margin is set well above that drift (the guard reads it every interval;
    # the actor below starts the guard afresh).
    kubectl.run(
        "patch", "pp", "city", "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"guard": {"margin": KEEPER_MARGIN}}}),
    )  # fmt: skip
    manifest = kubectl.run(
        "create", "configmap", "city-actor", "-n", NAMESPACE, f"--from-file=actor.onnx={fleet.good_actor}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)
    back = wait_for(
        lambda: (c := fleet.condition("PolicyFallback")).get("status") == "False" and c,
        4 * INTERVAL_S,
        "td3 back in control",
    )
    assert back["reason"] in ("CollectingWindow", "Dwelling", "WithinMargin")
    placed = fleet.placed()
    assert placed, "the heuristic's placement is still there"
    # Until the window has been full for a couple of decisions: it is never handed over.
    deadline = time.monotonic() + (GUARD["windowIntervals"] + 2) * INTERVAL_S
    while time.monotonic() < deadline:
        condition = fleet.condition("PolicyFallback")
        assert condition.get("status") == "False", condition
        time.sleep(1)
    status = fleet.policy()["status"]
    assert status["guard"]["inControl"] == "td3"
    assert status["guard"]["scoredIntervals"] >= GUARD["windowIntervals"]
    assert fleet.metric('edgeaigc_policy_fallback{policy="city"}') == 0.0
    print(f"the placement-keeping actor kept control; objective over the window: {status['guard']['objective']}")
