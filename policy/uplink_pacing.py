"""How long a camera's requests wait for its bandwidth share at the gateway, for the sim-to-real prediction.

The gateway holds each camera to its share of the node's uplink with a token bucket
(``inference/gateway/uplink.py``): rate ``r = C * b[u] / sum(b[v] for the active cameras)`` (no share
below ``min_share``), a bucket of ``burst_s`` seconds of ``r``; a request of ``n`` bytes waits until
the bucket has its bytes, and when that would take more than ``max_wait_s`` it is refused with the
exact time after which it would wait ``max_wait_s``; the camera (``--every-frame``) waits that out and
sends it again. The gateway's latency of a request starts before that wait: a camera over its share
shows up as a slow *served* request, whichever replica served it.

The system model's upload term (``D_in / (b[u] B q)``, a processor-sharing queue) is the time to push the
bytes through a radio; on the bed's loopback "radio" the bytes cost nothing but the bucket's wait, which
is zero under the rate (the burst absorbs a frame) and close to ``max_wait_s`` over it. So the prediction
follows the bucket: :func:`pace` plays a camera's frames (its requests in order, one frame at a time, the
next frame at its time or when the last one is answered) through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

#: The gateway's defaults (``GatewaySettings.uplink_max_wait_s``, ``UplinkBudget``'s burst and floor).
MAX_WAIT_S = 1.0
BURST_S = 1.0
MIN_SHARE = 0.01


def camera_rate(camera: str, shares: Mapping[str, float], active: Sequence[str], uplink_bytes_per_s: float) -> float:
    """Bytes per second the gateway lets ``camera`` send while the ``active`` cameras send too."""
    mean = sum(shares.values()) / len(shares) if shares else 1.0

    def weight(name: str) -> float:
        return max(shares.get(name, mean), MIN_SHARE)

    return uplink_bytes_per_s * weight(camera) / sum(weight(name) for name in {*active, camera})


@dataclasses.dataclass
class Bucket:
    """A camera's bucket and where its stream stands, carried from one interval to the next."""

    tokens: float | None = None
    """Bytes in the bucket after the last request (None: never used: a full bucket)."""
    behind_s: float = 0.0
    """How far past the interval's end the camera's last frame finished (it starts the next one late)."""
    updated_s: float = 0.0
    """When ``tokens`` was last counted, from the start of the next interval (<= ``behind_s``)."""


@dataclasses.dataclass(frozen=True)
class Pacing:
    waits_s: tuple[float, ...]
    """Mean wait of each request of a frame (in the frame's order) over the frames accepted."""
    frames: int
    refused: int


def pace(
    request_bytes: Sequence[float],
    service_s: Sequence[float],
    fps: float,
    rate_bytes_per_s: float,
    seconds: float,
    bucket: Bucket,
    *,
    max_frames: int | None = None,
    start_s: float = 0.0,
    burst_s: float = BURST_S,
    max_wait_s: float = MAX_WAIT_S,
) -> Pacing:
    """Play ``seconds`` of a camera's frames through its bucket (updated in place for the next interval).

    Args:
        request_bytes: the bytes of each request of a frame, in the order the camera sends them.
        service_s: each request's time once admitted (its replica's), for when the next one goes.
        fps: the camera's frame rate: a frame is due every ``1 / fps`` unless the last one is still going.
        rate_bytes_per_s: :func:`camera_rate` over the interval.
        max_frames: stop after this many frames (the camera fell silent).
        start_s: the first frame's time in the interval (a camera that started sending during it).
    """
    rate = max(rate_bytes_per_s, 1e-9)
    capacity = rate * burst_s
    tokens = capacity if bucket.tokens is None else min(bucket.tokens, capacity)
    waits = [0.0] * len(request_bytes)
    frames = refused = 0
    now = max(bucket.behind_s, start_s)
    updated = min(bucket.updated_s, now)
    while now < seconds and (max_frames is None or frames < max_frames):
        frame_due = now
        for index, (size, service) in enumerate(zip(request_bytes, service_s, strict=True)):
            tokens = min(capacity, tokens + rate * (now - updated))
            updated = now
            wait = max(0.0, (size - tokens) / rate)
            if wait > max_wait_s:  # refused; the camera comes back when the wait would be max_wait_s
                refused += 1
                now += wait - max_wait_s
                tokens = min(capacity, tokens + rate * (now - updated))
                updated = now
                wait = max(0.0, (size - tokens) / rate)
            tokens -= size
            waits[index] += wait
            now += wait + service
        frames += 1
        now = max(now, frame_due + 1.0 / fps)
    if updated < seconds:
        tokens, updated = min(capacity, tokens + rate * (seconds - updated)), seconds
    bucket.tokens, bucket.updated_s, bucket.behind_s = tokens, updated - seconds, max(0.0, now - seconds)
    return Pacing(tuple(w / frames if frames else 0.0 for w in waits), frames, refused)
