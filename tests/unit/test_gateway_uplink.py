"""The per-camera uplink budget of the gateway (inference/gateway/uplink.py), on a simulated clock."""

from __future__ import annotations

import math

import pytest

from edgeaigc.inference.gateway.uplink import UplinkBudget

CAPACITY = 1_000_000.0  # bytes/s


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def greedy_cameras(budget: UplinkBudget, clock: Clock, senders: dict[str, tuple[float, float]], size: int) -> dict:
    """Cameras that send ``size``-byte requests as fast as they are let (after each wait, or Retry-After),
    each between its (start, stop) times; accepted bytes per camera, counted over [10 s, stop - 1 s]."""
    due = {camera: start for camera, (start, _) in senders.items()}
    accepted = dict.fromkeys(senders, 0.0)
    refused = dict.fromkeys(senders, 0)
    for _ in range(200_000):  # bounded: the loop ends by time long before
        camera = min(due, key=lambda name: due[name])
        clock.now = due[camera]
        start, stop = senders[camera]
        if clock.now >= stop:
            del due[camera]
            if not due:
                break
            continue
        admission = budget.admit(camera, size)
        if admission.refused:
            refused[camera] += 1
            due[camera] = clock.now + admission.retry_after_s
            continue
        if start + 10 <= clock.now + admission.wait_s <= stop - 1:
            accepted[camera] += size
        due[camera] = clock.now + admission.wait_s
    return {"accepted": accepted, "refused": refused}


def test_under_contention_every_camera_gets_its_share() -> None:
    clock = Clock()
    budget = UplinkBudget(clock=clock)
    shares = {"cam-a": 0.5, "cam-b": 0.3, "cam-c": 0.2}
    budget.configure(CAPACITY, shares)
    result = greedy_cameras(budget, clock, {c: (0.0, 101.0) for c in shares}, size=20_000)
    for camera, share in shares.items():
        achieved = result["accepted"][camera] / 90.0
        assert achieved == pytest.approx(share * CAPACITY, rel=0.03), camera
    assert sum(result["refused"].values()) == 0  # paced, never refused: each waits for its own bytes only


def test_an_idle_cameras_share_goes_to_the_active_ones() -> None:
    clock = Clock()
    budget = UplinkBudget(clock=clock)
    budget.configure(CAPACITY, {"cam-a": 0.5, "cam-b": 0.3, "cam-c": 0.2})
    result = greedy_cameras(budget, clock, {"cam-a": (0.0, 61.0), "cam-b": (0.0, 61.0)}, size=20_000)
    assert result["accepted"]["cam-a"] / 50.0 == pytest.approx(CAPACITY * 0.5 / 0.8, rel=0.03)
    assert result["accepted"]["cam-b"] / 50.0 == pytest.approx(CAPACITY * 0.3 / 0.8, rel=0.03)


def test_a_request_that_would_wait_too_long_is_refused_and_costs_nothing() -> None:
    clock = Clock()
    budget = UplinkBudget(max_wait_s=0.5, burst_s=1.0, clock=clock)
    budget.configure(CAPACITY, {"cam-a": 1.0})
    assert budget.admit("cam-a", 1_000_000).wait_s == 0.0  # the full bucket: one second of its rate
    paced = budget.admit("cam-a", 400_000)
    assert paced.wait_s == pytest.approx(0.4) and not paced.refused
    refused = budget.admit("cam-a", 400_000)  # would wait 0.8 s
    assert refused.refused and refused.retry_after_s == pytest.approx(0.3)
    clock.now = 0.3
    assert budget.admit("cam-a", 400_000).wait_s == pytest.approx(0.5)  # the refusal took no tokens


def test_shares_follow_the_table_and_unknown_or_zero_share_cameras_are_slowed_not_starved() -> None:
    clock = Clock()
    budget = UplinkBudget(clock=clock)
    budget.configure(None, {"cam-a": 0.5})
    assert not budget.enforced and budget.admit("cam-a", 10**9).wait_s == 0 and math.isinf(budget.rate("cam-a"))
    budget.configure(CAPACITY, {"cam-a": 0.6, "cam-b": 0.0, "cam-c": 0.2})
    budget.admit("cam-a", 1)
    mean = 0.8 / 3  # a camera the table does not name weighs the mean share
    assert budget.rate("stranger") == pytest.approx(CAPACITY * mean / (0.6 + mean))
    assert budget.rate("cam-b") == pytest.approx(CAPACITY * 0.01 / 0.61)  # the floor, not zero
    clock.now = 10.0  # cam-a idle: cam-b alone gets everything
    assert budget.rate("cam-b") == pytest.approx(CAPACITY)


def test_buckets_of_silent_cameras_are_forgotten() -> None:
    clock = Clock()
    budget = UplinkBudget(clock=clock)
    budget.configure(CAPACITY, {})
    for index in range(1000):
        budget.admit(f"cam-{index}", 10)
    clock.now = 400.0
    budget.forget_idle(older_than_s=300.0)
    budget.admit("cam-new", 10)
    assert budget.rate("cam-new") == CAPACITY


@pytest.mark.parametrize(
    "arguments",
    [["--shares", "1"], ["--shares", "0.5,x"], ["--shares", "0.5,0"], ["--uplink", "0"], ["--seconds", "0"]],
)
def test_bench_uplink_refuses_bad_input(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from edgeaigc.cli.main import main

    assert main(["bench-uplink", *arguments]) == 2
    assert "edgeaigc bench-uplink:" in capsys.readouterr().err
