"""The operator's observer against a real, empty Prometheus: a new fleet is decided on zero demand.

A new fleet's gateways count nothing until they have a routing table, and the operator wrote one
only after a decision, which it refused while Prometheus had no request series: on the first real
node nothing was ever placed. With nothing cached, no series now means zero demand; with models
cached it still means lost metrics, and the placement is kept.
"""

from __future__ import annotations

import datetime
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from edgeaigc.cluster import prometheus
from edgeaigc.operator.observe import ObservationError, PrometheusObserver
from edgeaigc.policy.scenario import load_scenario
from tests.component.conftest import free_port

TINY = load_scenario("tiny")
NOW = datetime.datetime(2026, 11, 27, 7, 30, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if prometheus.binary() is None:
        pytest.skip(f"no prometheus binary ({prometheus.INSTALL_HINT})")
    port = free_port()
    command = prometheus.prepare(tmp_path_factory.mktemp("prometheus"), port, 1.0)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_new_fleet_is_observed_with_zero_demand(empty_prometheus: str) -> None:
    cache = np.zeros((len(TINY.node_names), len(TINY.model_names)))
    observation = PrometheusObserver(empty_prometheus).read(15).observation(TINY, cache, NOW)
    assert observation.camera_rates.sum() == 0.0
    assert observation.cache.sum() == 0.0


def test_lost_metrics_with_models_cached_keep_the_placement(empty_prometheus: str) -> None:
    cache = np.zeros((len(TINY.node_names), len(TINY.model_names)))
    cache[0, 0] = 1
    with pytest.raises(ObservationError) as raised:
        PrometheusObserver(empty_prometheus).read(15).observation(TINY, cache, NOW)
    assert raised.value.reason == "NoMetrics"
