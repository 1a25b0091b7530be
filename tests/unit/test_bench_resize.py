"""bench-resize's analysis: latency levels around a resize, when the stream settles, the verdict."""

from __future__ import annotations

import math

import pytest

from edgeaigc.cluster.bench_resize import Request, ResizeEvent, analyse, checks, level_ms, millicores, settling_s


def stream(latencies_ms: list[float], gap_s: float = 0.25) -> list[Request]:
    """Back-to-back paced requests: each sent ``gap_s`` after the previous one or at its answer if later."""
    requests, sent = [], 0.0
    for latency in latencies_ms:
        requests.append(Request(sent, sent + latency / 1000, ok=True))
        sent = max(sent + gap_s, requests[-1].answered_s)
    return requests


def test_level_is_the_median_of_the_answered_requests_sent_in_the_window() -> None:
    requests = [Request(0.0, 0.2, True), Request(1.0, 1.1, True), Request(2.0, 2.3, True), Request(3.0, 9.0, False)]
    assert level_ms(requests, 0.0, 3.5) == pytest.approx(200.0)
    assert math.isnan(level_ms(requests, 10.0, 20.0))


def test_settles_at_the_first_answer_from_which_on_the_latency_stays_at_the_new_level() -> None:
    requests = stream([200.0] * 40 + [200.0, 60.0, 210.0, 220.0, 230.0, 55.0, 50.0] + [50.0] * 40)
    at = requests[40].sent_s  # the resize: one fast answer, a run of slow ones (the old level), then fast for good
    assert settling_s(requests, at, 200.0, 50.0, until_s=1e9) == pytest.approx(requests[45].answered_s - at)


def test_one_slow_answer_after_settling_is_noise_not_the_old_level() -> None:
    requests = stream([200.0] * 40 + [50.0] * 10 + [365.0] + [50.0] * 30)
    at = requests[40].sent_s
    assert settling_s(requests, at, 200.0, 50.0, until_s=1e9) == pytest.approx(requests[40].answered_s - at)


def test_a_stream_that_keeps_the_old_level_never_settles() -> None:
    requests = stream([200.0] * 40 + [60.0] * 5 + [200.0] * 3)
    assert settling_s(requests, requests[40].sent_s, 200.0, 50.0, until_s=1e9) is None
    assert settling_s(requests, 0.0, 200.0, 200.0, until_s=1e9) is None  # no change to settle to
    assert settling_s(requests, 0.0, 200.0, 180.0, until_s=1e9) is None  # 10 %: noise, not a new level


def test_settling_upward_when_the_limit_shrinks() -> None:
    requests = stream([50.0] * 20 + [50.0, 210.0] + [200.0] * 20)
    settled = settling_s(requests, requests[20].sent_s, 50.0, 200.0, until_s=1e9)
    assert settled == pytest.approx(requests[21].answered_s - requests[20].sent_s)


def test_checks_a_resize_that_applied_moved_and_settled_and_one_that_did_not() -> None:
    requests = stream([400.0] * 30 + [60.0] * 120)
    event = ResizeEvent(100, 800, patch_sent_s=requests[30].sent_s, status_applied_s=0.5, container_quota_us=80_000)
    analyse(requests, [event], phase_s=10.0, interval_s=10.0)
    assert event.level_before_ms == pytest.approx(400.0) and event.level_after_ms == pytest.approx(60.0)
    assert checks([event], interval_s=10.0) == dict.fromkeys(
        ("applied_in_place", "latency_follows_limit", "settled_within_two_intervals"), True
    )
    # The quota was not written (the kubelet did not apply it) and the latency stayed: every check fails.
    flat = stream([400.0] * 60)
    stuck = ResizeEvent(100, 800, patch_sent_s=flat[30].sent_s, status_applied_s=0.5, container_quota_us=10_000)
    analyse(flat, [stuck], phase_s=10.0, interval_s=10.0)
    assert not any(checks([stuck], interval_s=10.0).values())


def test_a_restart_is_not_an_in_place_resize() -> None:
    event = ResizeEvent(100, 800, 0.0, status_applied_s=1.0, container_quota_us=80_000, restarts_before=0)
    assert event.applied
    event.restarts_after = 1
    assert not event.applied


@pytest.mark.parametrize(("quantity", "expected"), [("800m", 800), ("1", 1000), ("1.5", 1500), ("0", 0)])
def test_millicores(quantity: str, expected: int) -> None:
    assert millicores(quantity) == expected
