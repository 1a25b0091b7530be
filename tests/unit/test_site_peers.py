"""Sites in the system model: a model a site neighbour holds is fetched over the LAN, not the backhaul."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from edgeaigc.policy import system_model as sm
from edgeaigc.policy.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict
from tests.conftest import one_node_document


def _three_nodes(sites: list[str | None], **overrides: Any) -> Scenario:
    """The hand scenario's node three times (a, b, c) with the given sites (None: no site field)."""
    document = one_node_document(**overrides)
    node = document["edge_nodes"][0]
    nodes = []
    for name, site in zip("abc", sites, strict=True):
        entry = copy.deepcopy(node) | {"name": name}
        if site is not None:
            entry["site"] = site
        nodes.append(entry)
    document["edge_nodes"] = nodes
    document["cameras"] = document["cameras"] | {"count": 3}
    return scenario_from_dict(document)


# det is 10 MB; node a held it last slot, b and c cache it now.
PREVIOUS = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
NOW = np.array([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])


def test_a_node_without_site_is_a_site_of_its_own() -> None:
    scenario = _three_nodes([None, None, None])
    assert len(set(scenario.node_site.tolist())) == 3
    backhaul, peer = sm.download_megabytes(scenario, NOW, PREVIOUS)
    np.testing.assert_allclose(backhaul, [0, 10, 10])
    np.testing.assert_allclose(peer, [0, 0, 0])


def test_a_site_neighbour_saves_the_backhaul_bytes_price_and_time() -> None:
    # a and b share a site; c is alone: b fetches det from a over the LAN, c over its backhaul.
    scenario = _three_nodes(["north", "north", None], site_lan_mbps=100)
    backhaul, peer = sm.download_megabytes(scenario, NOW, PREVIOUS)
    np.testing.assert_allclose(backhaul, [0, 0, 10])
    np.testing.assert_allclose(peer, [0, 10, 0])
    # $1/GB on the backhaul only; the LAN is free.
    np.testing.assert_allclose(sm.download_cost(scenario, NOW, PREVIOUS), [0, 0, 0.01])
    # 10 MB = 80 Mbit: 0.8 s over the 100 Mbit/s LAN, 8 s over the 10 Mbit/s backhaul.
    np.testing.assert_allclose(sm.download_seconds(scenario, NOW, PREVIOUS), [0, 0.8, 8.0])


def test_a_neighbour_caching_it_in_the_same_slot_is_no_peer() -> None:
    # Nobody held det before: both site members fetch it from the cloud.
    scenario = _three_nodes(["north", "north", "north"])
    backhaul, peer = sm.download_megabytes(scenario, NOW, np.zeros_like(NOW))
    np.testing.assert_allclose(backhaul, [10, 10, 10])
    np.testing.assert_allclose(peer, [0, 0, 0])


def test_batched_caches_against_one_previous_cache() -> None:
    scenario = _three_nodes(["north", "north", None])
    candidates = np.stack([NOW, PREVIOUS])
    cost = sm.download_cost(scenario, candidates, PREVIOUS[None])
    np.testing.assert_allclose(cost, [[0, 0, 0.01], [0, 0, 0]])


def test_slot_outcome_reports_backhaul_and_peer_bytes() -> None:
    scenario = _three_nodes(["north", "north", None])
    plan = sm.Plan(cache=NOW, compute_share=NOW * 0.5, bandwidth_share=np.ones(3))
    rates = np.array([[1.0, 0, 0]] * 3)
    outcome = sm.evaluate_slot(scenario, plan, rates, np.ones(3), PREVIOUS)
    assert outcome.downloads == 2
    assert outcome.backhaul_download_mb == pytest.approx(10)
    assert outcome.peer_download_mb == pytest.approx(10)
    assert outcome.download_cost == pytest.approx(0.01)


def test_site_must_be_a_plain_name() -> None:
    with pytest.raises(ScenarioError, match=r"edge_nodes\[a\]\.site"):
        _three_nodes(["x-{i}", None, None])
    with pytest.raises(ScenarioError, match="site_lan_mbps"):
        _three_nodes([None, None, None], site_lan_mbps=0)


def test_bundled_sites_scenario_differs_from_traffic_city_only_in_sites() -> None:
    city, sites = load_scenario("traffic-city"), load_scenario("traffic-city-sites")
    assert len(set(city.node_site.tolist())) == city.num_nodes
    assert sorted(np.bincount(sites.node_site).tolist()) == [2, 3]
    np.testing.assert_array_equal(city.node_backhaul_mbps, sites.node_backhaul_mbps)
    np.testing.assert_array_equal(city.model_size_mb, sites.model_size_mb)
    np.testing.assert_array_equal(city.camera_fps, sites.camera_fps)
