"""Observe: what Prometheus and the API server say, turned into the policy's Observation.

The observation is built exactly as the simulator builds it (DESIGN §3, observation contract):
per (camera, model) request rate over the last interval and its mean over the last
:data:`~edgeaigc.policy.observation.TREND_WINDOW_SLOTS` intervals, each camera's link
quality, node compute use, the current placement and the clock. The queries follow
``docs/metrics-contract.md`` (gateway series carry ``edge_node`` and ``camera`` labels).

:func:`observation_from_samples` is pure (tested on hand-made query results);
:class:`PrometheusObserver` runs the queries and classifies failures so the caller can keep
the last good placement and say why.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeaigc.policy.observation import TREND_WINDOW_SLOTS, Observation
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import node_rates_of

Sample = Mapping[str, Any]
"""One element of a Prometheus instant-vector result: ``{"metric": {...}, "value": [t, "v"]}``."""


class ObservationError(RuntimeError):
    """Prometheus could not give an observation; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def rate_query(window_s: int) -> str:
    """Requests per second of every (edge node, camera, model) over the last ``window_s``."""
    return f"sum by (edge_node, camera, model) (increase(edgeaigc_requests_total[{window_s}s])) / {window_s}"


LINK_QUERY = "max by (edge_node, camera) (edgeaigc_camera_link_spectral_efficiency)"


def _value(sample: Sample) -> float:
    value = float(sample["value"][1])
    return value if np.isfinite(value) else 0.0


def rates_from_samples(scenario: Scenario, samples: Sequence[Sample]) -> np.ndarray:
    """``[U, M]`` request rates; series for unknown cameras or models are ignored."""
    cameras = {name: u for u, name in enumerate(scenario.camera_names)}
    models = {name: m for m, name in enumerate(scenario.model_names)}
    rates = np.zeros((scenario.num_cameras, scenario.num_models))
    for sample in samples:
        labels = sample["metric"]
        u, m = cameras.get(labels.get("camera", "")), models.get(labels.get("model", ""))
        if u is not None and m is not None:
            rates[u, m] += max(_value(sample), 0.0)
    return rates


def link_from_samples(scenario: Scenario, samples: Sequence[Sample]) -> np.ndarray:
    """``[U]`` spectral efficiency; a camera without a sample gets the median link state."""
    cameras = {name: u for u, name in enumerate(scenario.camera_names)}
    link = np.full(scenario.num_cameras, float(np.median(scenario.link_states)))
    for sample in samples:
        u = cameras.get(sample["metric"].get("camera", ""))
        if u is not None and _value(sample) > 0:
            link[u] = _value(sample)
    return link


def observation_from_samples(
    scenario: Scenario,
    last_interval: Sequence[Sample],
    recent_window: Sequence[Sample],
    link: Sequence[Sample],
    cache: np.ndarray,
    now: datetime.datetime,
) -> Observation:
    """The policy's observation from the three query results and the current placement."""
    rates = rates_from_samples(scenario, last_interval)
    node_rates = node_rates_of(scenario, rates)
    utilisation = (node_rates * scenario.model_work_s * cache).sum(axis=1) / scenario.node_compute
    return Observation(
        camera_rates=rates,
        camera_rates_recent_mean=rates_from_samples(scenario, recent_window),
        link_quality=link_from_samples(scenario, link),
        cache=cache.astype(float),
        node_compute_utilisation=utilisation,
        hour_of_day=now.hour + now.minute / 60 + now.second / 3600,
    )


@dataclasses.dataclass
class PrometheusObserver:
    """Runs the observation queries against one Prometheus."""

    url: str
    timeout_s: float = 5.0

    def _query(self, query: str) -> list[dict[str, Any]]:
        from prometheus_api_client import PrometheusConnect
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from requests.exceptions import RequestException
        from urllib3.util.retry import Retry

        try:
            # No retries: a failing Prometheus is reported now and retried at the next interval.
            client = PrometheusConnect(
                url=self.url, disable_ssl=True, timeout=int(max(self.timeout_s, 1)), retry=Retry(total=0)
            )
            return list(client.custom_query(query))
        except (RequestException, ConnectionError) as error:
            raise ObservationError(
                "PrometheusUnreachable", f"Prometheus at {self.url} is unreachable: {error}"
            ) from error
        except PrometheusApiClientException as error:
            raise ObservationError("PrometheusQueryFailed", f"query {query!r} failed: {error}") from error

    def observe(self, scenario: Scenario, cache: np.ndarray, interval_s: int) -> Observation:
        last = self._query(rate_query(interval_s))
        if not last:
            raise ObservationError(
                "NoMetrics", "Prometheus has no edgeaigc_requests_total series yet (are the gateways scraped?)"
            )
        recent = self._query(rate_query(interval_s * TREND_WINDOW_SLOTS))
        link = self._query(LINK_QUERY)
        return observation_from_samples(scenario, last, recent, link, cache, datetime.datetime.now(datetime.UTC))

    def hit_rate(self, window_s: int) -> float | None:
        """Share of requests served at the edge over the window (None without traffic)."""
        edge = self._query(f'sum(increase(edgeaigc_requests_total{{served_by="edge"}}[{window_s}s]))')
        total = self._query(f"sum(increase(edgeaigc_requests_total[{window_s}s]))")
        if not total or _value(total[0]) <= 0:
            return None
        return (_value(edge[0]) if edge else 0.0) / _value(total[0])
