"""Service time of a request under a CPU limit (a CFS quota), for the sim-to-real prediction.

A Kubernetes CPU limit is a CFS quota: per period ``P`` (100 ms) the container may use ``q = L * P`` of
CPU time, at the core's full speed, and is throttled for the rest of the period once it has. The
system model's ``work / CPU`` treats the limit as a slower core, which is right only for a stream that
keeps the quota used up (``docs/calibration.md``, "CPU limits": the means of ``bench-quota``'s
back-to-back requests are ``work / CPU`` within 15-20 %). A request that finds the quota unused — the
demo's one frame a second, a tenth of which a replica needs — is different:

- work ``w <= q``: it runs at the core's full speed, ``w``, whatever the limit (the demo detector's
  median at 300-1000m in ``quota_latency.json`` is its work at one core, not ``w / L``);
- ``w > q``: it runs ``q``, waits out the period, runs ``q`` again...: its time is rounded up to
  whole periods (``ceil(w / q)`` of them) less the phase at which it arrived (YOLOX-Nano at 100m
  needs 4 periods).

Between the two, a request finds the quota partly used in proportion to the replica's utilisation
``rho`` (load over the limit): :func:`service_seconds` interpolates linearly between the isolated
request (``rho = 0``) and the saturated stream's ``w / L`` (``rho = 1``); :func:`response_seconds` adds
an M/D/1 wait for open arrivals.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: The kubelet's CFS period (``cpu.cfs_period_us`` = 100000 on every node of the bed).
CFS_PERIOD_S = 0.1
#: Utilisation past which the M/D/1 wait is held (an overloaded replica: large, not infinite).
RHO_MAX = 0.95
#: Arrival phases (within a period) an isolated request's time is averaged over.
_PHASES = 64


def phases(period_s: float = CFS_PERIOD_S, count: int = _PHASES) -> list[float]:
    """``count`` arrival times since a period began, evenly spread over it (their centres)."""
    return [(index + 0.5) / count * period_s for index in range(count)]


def isolated_seconds_at(work_s: float, limit_cores: float, phase_s: float, period_s: float = CFS_PERIOD_S) -> float:
    """Time of one request of ``work_s`` (at one core) arriving ``phase_s`` after a period began at a container
    with an unused quota of ``limit_cores``: runs at full speed while the period's quota lasts, waits for the
    next period when it runs out."""
    if work_s <= 0:
        return 0.0
    quota = limit_cores * period_s
    if limit_cores >= 1.0 or work_s <= quota:
        return work_s  # a quota of a whole core or more never throttles one thread; a small request fits
    now, left, quota_left, elapsed = phase_s, work_s, quota, 0.0
    while left > 1e-12:
        to_boundary = period_s - now
        run = min(left, quota_left, to_boundary)
        left -= run
        quota_left -= run
        elapsed += run
        now += run
        if left <= 1e-12:
            break
        if quota_left <= 1e-12 or now >= period_s - 1e-12:  # throttled, or the period is over: the next one
            elapsed += period_s - now
            now, quota_left = 0.0, quota
    return elapsed


def isolated_seconds(work_s: float, limit_cores: float, period_s: float = CFS_PERIOD_S) -> float:
    """Mean time of one request of ``work_s`` (at one core) arriving at a uniformly random phase of the
    period to a container with an unused quota of ``limit_cores`` (:func:`isolated_seconds_at`)."""
    if work_s <= 0:
        return 0.0
    if limit_cores >= 1.0 or work_s <= limit_cores * period_s:
        return work_s
    return sum(isolated_seconds_at(work_s, limit_cores, phase, period_s) for phase in phases(period_s)) / _PHASES


def periods_needed(work_s: float, limit_cores: float, period_s: float = CFS_PERIOD_S) -> int:
    """Periods whose quota one request of ``work_s`` needs: the rounding of its time."""
    return max(1, math.ceil(work_s / (limit_cores * period_s) - 1e-9)) if limit_cores < 1.0 else 1


def service_seconds(work_s: float, limit_cores: float, utilisation: float, period_s: float = CFS_PERIOD_S) -> float:
    """Mean time of one request at a replica limited to ``limit_cores`` whose quota is ``utilisation`` used
    (0: an isolated request, :func:`isolated_seconds`; 1: a saturated stream, ``work / CPU``), not counting
    any wait behind other requests."""
    if work_s <= 0:
        return 0.0
    rho = min(max(utilisation, 0.0), 1.0)
    return (1.0 - rho) * isolated_seconds(work_s, limit_cores, period_s) + rho * work_s / limit_cores


def response_seconds(work_s: float, limit_cores: float, rate_per_s: float, period_s: float = CFS_PERIOD_S) -> float:
    """Mean time of a request (waiting and service) at a replica limited to ``limit_cores`` receiving
    ``rate_per_s`` requests of ``work_s`` each (open arrivals, an M/D/1 wait): see the module doc."""
    if work_s <= 0:
        return 0.0
    rho = min(rate_per_s * work_s / limit_cores, 1.0)
    service = service_seconds(work_s, limit_cores, rho, period_s)
    held = min(rho, RHO_MAX)
    return service + held * service / (2.0 * (1.0 - held))  # M/D/1: deterministic work


def response_samples(
    work_samples_s: Sequence[float], limit_cores: float, rate_per_s: float, period_s: float = CFS_PERIOD_S
) -> list[float]:
    """The spread of :func:`response_seconds` over requests: one time per (work sample, arrival phase), each
    request's own work at its own phase of the period, partly used in proportion to the utilisation as in
    :func:`service_seconds`. The utilisation and the M/D/1 wait are those of the median work (the work the
    fleet declares), and the wait is each request's mean wait: its spread is left out."""
    if not work_samples_s:
        return []
    work_s = statistics.median(work_samples_s)
    rho = min(rate_per_s * work_s / limit_cores, 1.0) if work_s > 0 else 0.0
    held = min(rho, RHO_MAX)
    wait = held * service_seconds(work_s, limit_cores, rho, period_s) / (2.0 * (1.0 - held))
    return [
        (1.0 - rho) * isolated_seconds_at(work, limit_cores, phase, period_s) + rho * work / limit_cores + wait
        for work in work_samples_s
        for phase in phases(period_s)
    ]
