"""The chaos soak's routing-table watch against a real gateway on 127.0.0.1: its ``/metrics`` over HTTP is
judged valid while the gateway holds a table, invalid once it rejected one, unreachable once it is gone."""

from __future__ import annotations

import time
from pathlib import Path

from edgeaigc.cluster.chaos import sample_gateway_table
from edgeaigc.cluster.chaos_invariants import TableWatch
from edgeaigc.inference.gateway.gateway import GatewaySettings
from tests.component.conftest import running_gateway
from tests.component.tables import EDGE_NODE, ConfigMapMount, routing_table

CLOUD = "http://127.0.0.1:9"  # never contacted: no request is routed here


def test_the_watch_sees_what_the_gateway_holds(tmp_path: Path) -> None:
    mount = ConfigMapMount(tmp_path / "routing")
    mount.write_table(routing_table(3, {}, {"det": CLOUD}))
    watch = TableWatch()
    settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=mount.path, poll_interval_s=0.1)
    with running_gateway(settings) as gateway:
        sample_gateway_table(gateway.url, watch)
        assert (watch.invalid, watch.generations) == (0, {"gateway": [3, 3]})
        mount.write('{"apiVersion": "edgeaigc.io/v1alpha1", "kind": "RoutingTable", "generation": -4}')
        deadline = time.monotonic() + 5
        while not watch.invalid:
            assert time.monotonic() < deadline, "the rejected table was not seen through /metrics within 5 s"
            time.sleep(0.1)
            sample_gateway_table(gateway.url, watch)
        url = gateway.url
    assert watch.errors[0]["error"] == "the gateway rejected 1 invalid routing table(s) since it started"
    assert watch.generations == {"gateway": [3, 3]}  # the last valid table was kept
    invalid = watch.invalid
    sample_gateway_table(url, watch)  # the gateway is gone: unreachable, not invalid
    assert (watch.gateway_unreachable, watch.invalid) == (1, invalid)
