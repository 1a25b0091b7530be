"""The requests a policy's gateways counted in its last decisions' windows, kept between decisions.

The policy's observation has the mean request rate over the last
:data:`~edgeaigc.policy.observation.TREND_WINDOW_SLOTS` intervals beside the last interval's. Read
from Prometheus, that trend window was the dearest query of a decision: at 1000 nodes x 50 models
it reads 100 000 series over 15 scrapes each (1.1-3.1 s of Prometheus time, of 2.8-5 s for all the
queries). The operator reads each interval's counts anyway, so it keeps the last few and adds them
up itself (:class:`DemandHistory`); Prometheus is asked for the trend window only while the operator
has not got them: after it started or took the lead, after the policy's Prometheus or selector
changed, and after decisions stopped for a while (a stale history is not used).

The trend window is then the last :data:`~edgeaigc.policy.observation.TREND_WINDOW_SLOTS` decisions'
windows rather than the last ``TREND_WINDOW_SLOTS x intervalSeconds`` seconds: the same while
decisions keep to their interval, and what the simulator's slots are when they do not.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from edgeaigc.policy.observation import TREND_WINDOW_SLOTS

Sample = Mapping[str, Any]
"""One element of a Prometheus instant-vector result: ``{"metric": {...}, "value": [t, "v"]}``."""


@dataclasses.dataclass(frozen=True)
class CountedWindow:
    """What one decision's window counted, only what was not zero."""

    end: datetime.datetime
    seconds: float
    requests: dict[tuple[str, str], float]
    """(edge node, model) -> requests, over both places (edge and cloud)."""
    camera_bytes: dict[tuple[str, str], float]
    """(edge node, camera) -> request bytes."""


@dataclasses.dataclass(frozen=True)
class EarlierWindows:
    """The windows before the current one, added up, as query results (one sample per pair)."""

    requests: list[dict[str, Any]]
    """Requests of each (edge node, model) (labels ``edge_node``, ``model``)."""
    camera_bytes: list[dict[str, Any]]
    """Request bytes of each camera (labels ``edge_node``, ``camera``)."""
    seconds: float
    """How long the windows were, together."""


def _count(sample: Sample) -> float:
    value = float(sample["value"][1])
    return value if math.isfinite(value) and value > 0 else 0.0


def _summed(samples: Iterable[Sample], label: str) -> dict[tuple[str, str], float]:
    """``(edge_node, <label>) -> value`` summed over the other labels; samples without both labels are left out."""
    sums: dict[tuple[str, str], float] = {}
    for sample in samples:
        labels = sample["metric"]
        key = (labels.get("edge_node", ""), labels.get(label, ""))
        if key[0] and key[1] and (value := _count(sample)) > 0:
            sums[key] = sums.get(key, 0.0) + value
    return sums


def _as_samples(sums: Mapping[tuple[str, str], float], label: str, at: float) -> list[dict[str, Any]]:
    return [
        {"metric": {"edge_node": node, label: name}, "value": [at, repr(value)]} for (node, name), value in sums.items()
    ]


class DemandHistory:
    """The last decisions' windows of one policy (:data:`TREND_WINDOW_SLOTS` - 1 of them, the current one apart)."""

    def __init__(self, windows: int = TREND_WINDOW_SLOTS - 1, stale_factor: float = 2.0) -> None:
        """``stale_factor``: the windows are used while the oldest ended at most this many times
        ``windows x intervalSeconds`` ago (decisions may run late, by up to their own duration)."""
        self.windows = windows
        self.stale_factor = stale_factor
        self._windows: collections.deque[CountedWindow] = collections.deque(maxlen=windows)
        self._source: Hashable = None

    def earlier(self, source: Hashable, now: datetime.datetime, interval_s: float) -> EarlierWindows | None:
        """The kept windows added up, or None when Prometheus must be asked for the trend window: too few
        windows, an old one, or windows read with other queries (``source``: the Prometheus and selector)."""
        windows = self._windows
        if source != self._source or not windows or len(windows) < self.windows:
            return None
        if (now - windows[0].end).total_seconds() > self.stale_factor * len(windows) * interval_s:
            return None
        requests: collections.Counter[tuple[str, str]] = collections.Counter()
        camera_bytes: collections.Counter[tuple[str, str]] = collections.Counter()
        for window in windows:
            requests.update(window.requests)
            camera_bytes.update(window.camera_bytes)
        at = windows[-1].end.timestamp()
        return EarlierWindows(
            requests=_as_samples(requests, "model", at),
            camera_bytes=_as_samples(camera_bytes, "camera", at),
            seconds=sum(w.seconds for w in windows),
        )

    def record(
        self,
        source: Hashable,
        end: datetime.datetime,
        seconds: float,
        requests: Iterable[Sample],
        camera_bytes: Iterable[Sample],
    ) -> None:
        """Keep one decision's window (its request and camera-byte query results); the oldest goes."""
        if source != self._source:
            self._windows.clear()
            self._source = source
        self._windows.append(CountedWindow(end, seconds, _summed(requests, "model"), _summed(camera_bytes, "camera")))

    def __len__(self) -> int:
        return len(self._windows)
