"""The prediction's model of the gateway's uplink pacing against the gateway's own token buckets."""

from __future__ import annotations

import pytest

from edgeaigc.inference.gateway.uplink import UplinkBudget
from edgeaigc.policy.uplink_pacing import Bucket, camera_rate, pace

UPLINK = 5_000_000.0
FRAME = 100_000.0
SERVICE_S = 0.05


def _gateway(shares: dict[str, float], seconds: float) -> tuple[float, int, int]:
    """camera-0 (1 frame/s of FRAME bytes, ``--every-frame``) through the gateway's UplinkBudget beside an
    active camera-1: mean wait of its requests, frames answered, refusals."""
    now = 0.0
    budget = UplinkBudget(clock=lambda: now)
    budget.configure(UPLINK, shares)
    waits: list[float] = []
    refused = 0
    done = 0.0
    frame = 0
    while True:
        now = max(float(frame), done)
        if now >= seconds:
            break
        budget.admit("camera-1", 0)  # camera-1 keeps sending: its share is not camera-0's
        admission = budget.admit("camera-0", int(FRAME))
        if admission.refused:
            refused += 1
            assert admission.retry_after_s is not None
            now += admission.retry_after_s
            budget.admit("camera-1", 0)
            admission = budget.admit("camera-0", int(FRAME))
            assert not admission.refused
        waits.append(admission.wait_s)
        done = now + admission.wait_s + SERVICE_S
        frame += 1
    return sum(waits) / len(waits), len(waits), refused


@pytest.mark.parametrize("share", [0.5, 0.03, 0.01])
def test_the_model_of_the_pacing_waits_as_the_gateways_buckets_do(share: float) -> None:
    shares = {"camera-0": share, "camera-1": 1.0 - share}
    rate = camera_rate("camera-0", shares, ["camera-0", "camera-1"], UPLINK)
    assert rate == pytest.approx(UPLINK * share)
    predicted = pace([FRAME], [SERVICE_S], 1.0, rate, 60.0, Bucket())
    mean_wait, frames, refused = _gateway(shares, 60.0)
    assert predicted.waits_s[0] == pytest.approx(mean_wait, abs=0.02)
    assert predicted.frames == pytest.approx(frames, abs=1)
    assert predicted.refused == pytest.approx(refused, abs=1)


def test_a_camera_over_its_share_waits_the_longest_pacing_and_under_it_not_at_all() -> None:
    over = pace([FRAME], [SERVICE_S], 1.0, 50_000.0, 60.0, Bucket())
    under = pace([FRAME], [SERVICE_S], 1.0, 2_500_000.0, 60.0, Bucket())
    assert over.waits_s[0] > 0.9 and over.refused > 25  # a frame takes 2 s of its rate: 30 in a minute
    assert under.waits_s[0] == 0.0 and under.refused == 0 and under.frames == 60


def test_the_bucket_carries_from_one_interval_to_the_next() -> None:
    bucket = Bucket()
    first = pace([FRAME], [SERVICE_S], 1.0, 90_000.0, 10.0, bucket)  # 10 % over its rate: the backlog grows
    second = pace([FRAME], [SERVICE_S], 1.0, 90_000.0, 10.0, bucket)
    assert first.waits_s[0] < second.waits_s[0]
