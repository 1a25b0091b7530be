"""Each camera's planned share of its node's uplink, enforced on the request bodies the gateway accepts.

The plan gives every camera a bandwidth share ``b[u]`` of its edge node's uplink (the routing
table's ``bandwidthShare``) and the node's uplink capacity ``C`` in bytes per second (its
``uplinkBytesPerSecond``: the EdgeNode's bandwidth times the link's spectral efficiency the
operator assumed). The gateway holds each camera to it with a token bucket per camera:

- **Rate.** A camera's bucket fills at ``C * b[u] / sum(b[v] for the active cameras v)``: under
  contention every camera gets its share of ``C``; the share of a camera that is idle (no request
  for ``idle_after_s``) is split among the active ones in proportion to their shares, so no
  bandwidth is wasted (work-conserving, like generalised processor sharing). A camera the table
  does not name weighs the mean share of those it does; no camera weighs less than ``min_share``,
  so one the plan gave nothing (it had no demand yet) is slowed, not starved, until the next plan.
- **Pacing, then 429.** A request of ``n`` bytes takes ``n`` tokens; the bucket may go below
  zero (the bytes are reserved) and the request then waits until the bucket is back at zero,
  so a camera over its rate is slowed down, not refused. When that wait would exceed
  ``max_wait_s`` the request is refused with 429 and ``Retry-After`` (and takes no tokens): the
  camera is told when to come back rather than queued without bound.
- **Burst.** A full bucket holds ``burst_s`` seconds of the camera's rate, so a camera that
  sends a frame now and then is not delayed.

Only accepted bodies count: a refused request costs the camera nothing but the refusal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    last_request: float


@dataclass(frozen=True)
class Admission:
    """What to do with one request: wait ``wait_s`` then forward it, or refuse it (``retry_after_s``)."""

    wait_s: float = 0.0
    retry_after_s: float | None = None
    rate_bytes_per_s: float = math.inf

    @property
    def refused(self) -> bool:
        return self.retry_after_s is not None


class UplinkBudget:
    """Token buckets of the cameras of one edge node (see the module doc). Not thread-safe: one event loop."""

    def __init__(
        self,
        *,
        max_wait_s: float = 1.0,
        burst_s: float = 1.0,
        idle_after_s: float = 2.0,
        min_share: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_wait_s, self.burst_s, self.idle_after_s, self.clock = max_wait_s, burst_s, idle_after_s, clock
        self.min_share = min_share
        self.capacity_bytes_per_s: float | None = None
        self.shares: dict[str, float] = {}
        self._buckets: dict[str, _Bucket] = {}

    def configure(self, capacity_bytes_per_s: float | None, shares: Mapping[str, float]) -> None:
        """The node's uplink (None: not enforced) and the cameras' shares, from a new routing table."""
        self.capacity_bytes_per_s = capacity_bytes_per_s if capacity_bytes_per_s and capacity_bytes_per_s > 0 else None
        self.shares = {camera: max(0.0, float(share)) for camera, share in shares.items()}

    @property
    def enforced(self) -> bool:
        return self.capacity_bytes_per_s is not None

    def weight(self, camera: str) -> float:
        share = self.shares.get(camera)
        if share is None:
            share = sum(self.shares.values()) / len(self.shares) if self.shares else 1.0
        return max(share, self.min_share)

    def rate(self, camera: str, now: float | None = None) -> float:
        """Bytes per second ``camera`` may send now (infinite when not enforced)."""
        if self.capacity_bytes_per_s is None:
            return math.inf
        now = self.clock() if now is None else now
        # Active: a request within idle_after_s (a paced request counts from when it was admitted, at most
        # max_wait_s earlier, so keep max_wait_s < idle_after_s).
        active = {name for name, bucket in self._buckets.items() if now - bucket.last_request < self.idle_after_s}
        active.add(camera)
        return self.capacity_bytes_per_s * self.weight(camera) / sum(self.weight(name) for name in active)

    def admit(self, camera: str, size_bytes: int) -> Admission:
        """Take ``size_bytes`` from ``camera``'s bucket: how long to wait first, or a refusal."""
        if self.capacity_bytes_per_s is None:
            return Admission()
        now = self.clock()
        rate = self.rate(camera, now)
        bucket = self._buckets.get(camera)
        if bucket is None:
            bucket = self._buckets[camera] = _Bucket(tokens=rate * self.burst_s, updated=now, last_request=now)
        bucket.tokens = min(rate * self.burst_s, bucket.tokens + rate * (now - bucket.updated))
        bucket.updated, bucket.last_request = now, now
        after = bucket.tokens - size_bytes
        wait = max(0.0, -after / rate)
        if wait > self.max_wait_s:
            # Back when the bucket will have filled enough for this request to wait at most max_wait_s.
            return Admission(retry_after_s=wait - self.max_wait_s, rate_bytes_per_s=rate)
        bucket.tokens = after
        return Admission(wait_s=wait, rate_bytes_per_s=rate)

    def forget_idle(self, older_than_s: float = 300.0) -> None:
        """Drop the buckets of cameras silent for ``older_than_s`` (bounded memory under many camera names)."""
        now = self.clock()
        self._buckets = {n: b for n, b in self._buckets.items() if now - b.last_request < older_than_s}
