"""The CPU-limit (CFS quota) rule of the sim-to-real prediction, checked against bench-quota's measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeaigc.policy import cfs

QUOTA_LATENCY = Path(cfs.__file__).parent / "calibration" / "quota_latency.json"


def _levels(model: str) -> dict[int, dict]:
    document = json.loads(QUOTA_LATENCY.read_text())
    return {level["limit_m"]: level for level in document["models"][model]["levels"] if level["clients"] == 1}


def test_work_that_fits_the_periods_quota_runs_at_full_speed_and_more_is_rounded_up_to_periods() -> None:
    assert cfs.isolated_seconds(0.006, 0.3) == 0.006  # 30 ms of quota per period hold 6 ms of work
    assert cfs.isolated_seconds(0.036, 1.0) == 0.036
    # 36 ms at 100m needs the quota of 4 periods: at least 2 whole periods and the work, at most 4 periods
    assert cfs.periods_needed(0.036, 0.1) == 4
    assert 2 * 0.1 + 0.036 <= cfs.isolated_seconds(0.036, 0.1) <= 4 * 0.1
    # a saturated stream (every period's quota used) sees the limit as a slower core: work / CPU
    assert cfs.service_seconds(0.036, 0.1, utilisation=1.0) == pytest.approx(0.36)
    # open arrivals queue: the busier the replica, the longer the wait
    assert cfs.response_seconds(0.006, 0.3, 1.0) < cfs.response_seconds(0.006, 0.3, 40.0)


@pytest.mark.parametrize(("model", "limit_m"), [("det-demo-day", 300), ("det-demo-day", 500), ("cls-demo", 300)])
def test_the_median_request_of_a_small_model_takes_its_work_at_one_core_not_work_over_cpu(
    model: str, limit_m: int
) -> None:
    # quota_latency.json: one client, one request at a time. Most requests find quota left in the period
    # (a few exhaust it and wait for the next: the p95), so the median is the work at the core's full speed
    # plus the request's fixed cost (the median at 1000m less the work), not work / CPU.
    levels = _levels(model)
    work_s = levels[1000]["cpu_ms_per_request"] / 1000
    fixed_s = (levels[1000]["p50_ms"] - levels[1000]["cpu_ms_per_request"]) / 1000
    median_s = levels[limit_m]["p50_ms"] / 1000
    rule = fixed_s + cfs.isolated_seconds(work_s, limit_m / 1000)
    slower_core = fixed_s + work_s / (limit_m / 1000)
    assert rule == pytest.approx(median_s, rel=0.25)
    assert abs(rule - median_s) < abs(slower_core - median_s) / 3


@pytest.mark.parametrize("limit_m", [100, 200, 300, 500])
def test_a_back_to_back_stream_of_yolox_nano_sees_the_limit_as_a_slower_core(limit_m: int) -> None:
    # YOLOX-Nano's 36 ms leave no quota unused between one client's requests: their mean is work / CPU
    # (the saturated end of the rule) within 20 %.
    levels = _levels("det-yolox-nano")
    work_s = levels[1000]["cpu_ms_per_request"] / 1000
    saturated = cfs.service_seconds(work_s, limit_m / 1000, utilisation=1.0)
    assert saturated == pytest.approx(levels[limit_m]["mean_ms"] / 1000, rel=0.2)


def test_the_spread_of_requests_is_their_own_work_at_their_own_phase_around_the_same_mean() -> None:
    # one work: the spread's mean is the mean response, whatever the load
    for rate in (0.5, 5.0):
        times = cfs.response_samples([0.036], 0.1, rate)
        assert sum(times) / len(times) == pytest.approx(cfs.response_seconds(0.036, 0.1, rate))
    # 36 ms at 100m, isolated: its 4 periods' quota spans 3 to 4 periods, by the phase it arrives at
    times = sorted(cfs.response_samples([0.036], 0.1, 0.0))
    assert times[0] >= 2 * 0.1
    assert times[-1] <= 4 * 0.1
    assert times[int(0.95 * len(times))] > cfs.isolated_seconds(0.036, 0.1)
    # work that fits the quota runs at full speed: the spread is the work's own
    assert sorted(set(cfs.response_samples([0.004, 0.006], 0.5, 0.0))) == pytest.approx([0.004, 0.006])
    assert cfs.response_samples([], 0.5, 1.0) == []
