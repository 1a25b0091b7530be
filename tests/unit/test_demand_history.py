"""The operator's record of its last intervals' counts: the trend window without a query of its own."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import numpy as np
import pytest

from edgeaigc.operator.demand_history import DemandHistory
from edgeaigc.operator.observe import (
    NOTHING_COUNTED,
    QUERIES_PER_READ,
    QUERIES_PER_STEADY_READ,
    ObservationError,
    PrometheusObserver,
    request_series_query,
)
from edgeaigc.policy.observation import TREND_WINDOW_SLOTS
from edgeaigc.policy.scenario import load_scenario

TINY = load_scenario("tiny")  # nodes pi-0, pi-1; models det-day, ...
T0 = datetime.datetime(2026, 12, 7, 8, 0, tzinfo=datetime.UTC)
SOURCE = ("http://prometheus:9090", "")


def _sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [T0.timestamp(), str(value)]}


def _requests(k: int) -> list[dict[str, Any]]:
    """Interval ``k``'s counts: pi-0 det-day at the edge and in the cloud, pi-1 det-day growing."""
    return [
        _sample(10 + k, edge_node="pi-0", model="det-day", served_by="edge"),
        _sample(2, edge_node="pi-0", model="det-day", served_by="cloud"),
        _sample(5 * k, edge_node="pi-1", model="det-day", served_by="cloud"),
    ]


def _bytes(k: int) -> list[dict[str, Any]]:
    return [_sample(100 * (k + 1), edge_node="pi-0", camera=TINY.camera_names[0])]


def _filled(history: DemandHistory, windows: int, interval_s: float = 60) -> datetime.datetime:
    for k in range(windows):
        history.record(SOURCE, T0 + datetime.timedelta(seconds=interval_s * k), interval_s, _requests(k), _bytes(k))
    return T0 + datetime.timedelta(seconds=interval_s * windows)


def test_the_earlier_windows_are_added_up_once_there_are_enough() -> None:
    history = DemandHistory()
    now = _filled(history, TREND_WINDOW_SLOTS - 2)
    assert history.earlier(SOURCE, now, 60) is None  # one interval short: Prometheus reads the trend window
    now = _filled(history, TREND_WINDOW_SLOTS - 1)
    earlier = history.earlier(SOURCE, now, 60)
    assert earlier is not None and earlier.seconds == 60 * (TREND_WINDOW_SLOTS - 1)
    counts = {(s["metric"]["edge_node"], s["metric"]["model"]): float(s["value"][1]) for s in earlier.requests}
    windows = range(TREND_WINDOW_SLOTS - 1)
    # Both places of a pair together (the trend window is per (edge node, model)); zero pairs left out.
    assert counts == {
        ("pi-0", "det-day"): sum(12 + k for k in windows),
        ("pi-1", "det-day"): sum(5 * k for k in windows),
    }
    assert [float(s["value"][1]) for s in earlier.camera_bytes] == [sum(100 * (k + 1) for k in windows)]


def test_the_oldest_window_goes_and_a_stale_or_foreign_history_is_not_used() -> None:
    history = DemandHistory()
    now = _filled(history, TREND_WINDOW_SLOTS + 3)
    assert len(history) == TREND_WINDOW_SLOTS - 1
    assert history.earlier(SOURCE, now, 60) is not None
    # Decisions stopped for a while (Prometheus down, no lead): the windows are too old to be the trend.
    assert history.earlier(SOURCE, now + datetime.timedelta(minutes=10), 60) is None
    # Another Prometheus or selector: other series, the record starts again.
    assert history.earlier(("http://other:9090", ""), now, 60) is None
    history.record(("http://other:9090", ""), now, 60, _requests(0), _bytes(0))
    assert len(history) == 1 and history.earlier(SOURCE, now, 60) is None


@dataclasses.dataclass
class FakePrometheus(PrometheusObserver):
    """Answers the observer's queries by their shape: ``answers`` to the request reads."""

    answers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    camera_bytes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    series_exist: bool = True
    sent: list[str] = dataclasses.field(default_factory=list)

    def _send(self, query: str) -> list[dict[str, Any]]:
        self.sent.append(query)
        if query == request_series_query(self.selector):
            return [_sample(1, source="recorded")] if self.series_exist else []
        if "edgeaigc:requests_total" in query:
            return self.answers
        if "camera_request_bytes" in query:
            return self.camera_bytes
        return []


def test_a_steady_read_takes_the_trend_from_the_history_and_sends_five_queries() -> None:
    history = DemandHistory()
    now = _filled(history, TREND_WINDOW_SLOTS - 1)
    k = TREND_WINDOW_SLOTS - 1  # this interval
    observer = FakePrometheus(*SOURCE)
    observer.answers, observer.camera_bytes = _requests(k), _bytes(k)
    samples = observer.read(60, history.earlier(SOURCE, now, 60))
    assert observer.queries_sent == QUERIES_PER_STEADY_READ < QUERIES_PER_READ
    assert not any(f"[{60 * TREND_WINDOW_SLOTS}s]" in query for query in observer.sent)
    observation = samples.observation(TINY, np.zeros((TINY.num_nodes, TINY.num_models)), now)
    # The trend: every window's counts (this one's too) over the windows' seconds.
    det = TINY.model_names.index("det-day")
    pi1 = TINY.camera_node == TINY.node_names.index("pi-1")
    expected = sum(5 * j for j in range(TREND_WINDOW_SLOTS)) / (60 * TREND_WINDOW_SLOTS)
    assert observation.camera_rates_recent_mean[pi1, det].sum() == pytest.approx(expected)
    assert observation.camera_rates[pi1, det].sum() == pytest.approx(5 * k / 60)
    # Without a history the same read asks Prometheus for the trend window: seven queries.
    fresh = FakePrometheus(*SOURCE)
    fresh.answers = _requests(k)
    fresh.read(60)
    assert fresh.queries_sent == QUERIES_PER_READ and any(f"[{60 * TREND_WINDOW_SLOTS}s]" in q for q in fresh.sent)


def test_series_that_counted_nothing_differ_from_no_series() -> None:
    history = DemandHistory()
    now = _filled(history, TREND_WINDOW_SLOTS - 1)
    cached = np.ones((TINY.num_nodes, TINY.num_models))
    observer = FakePrometheus(*SOURCE)  # the series exist; no pair counted a request this interval
    samples = observer.read(60, history.earlier(SOURCE, now, 60))
    assert list(samples.last_interval) == [NOTHING_COUNTED]
    # The earlier intervals counted requests: a gap in the counts, not a fleet gone quiet. Keep the placement.
    with pytest.raises(ObservationError) as failure:
        samples.observation(TINY, cached, now)
    assert failure.value.reason == "NoRequestsCounted"
    assert f"the {60 * TREND_WINDOW_SLOTS} s before" in str(failure.value)
    # No request series at all while models are cached: lost metrics.
    lost = FakePrometheus(*SOURCE)
    lost.series_exist = False
    with pytest.raises(ObservationError) as failure:
        lost.read(60).observation(TINY, cached, now)
    assert failure.value.reason == "NoMetrics"
    # A fleet that went quiet for the whole trend window is decided on (zero demand).
    quiet = FakePrometheus(*SOURCE)
    quiet_now = _filled(quiet_history := DemandHistory(), 0)
    observation = quiet.read(60, quiet_history.earlier(SOURCE, quiet_now, 60)).observation(TINY, cached, quiet_now)
    assert observation.camera_rates.sum() == 0 and observation.camera_rates_recent_mean.sum() == 0
