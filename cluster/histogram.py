"""Quantiles of Prometheus-style latency histograms, for observed and predicted latencies alike.

An observed p95 read from a histogram is only as fine as its buckets (``REQUEST_LATENCY_BUCKETS``: 50 ms
wide between 50 and 100 ms, 150 ms between 100 and 250 ms). Sim-to-real puts its predicted latencies through
the same buckets (:func:`bucket_counts`) and reads both with the same rule (:func:`histogram_quantile`), so
the two p95s differ by what the model gets wrong, not by the histogram's resolution.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram as Prometheus' ``histogram_quantile`` reads it: linear within the
    bucket the rank falls in (the first bucket starts at 0), the last finite bound if it falls in ``+Inf``.

    Args:
        q: the quantile, 0..1.
        bounds: the buckets' upper bounds, ascending, the last ``+Inf``.
        cumulative: the count of observations at or below each bound.

    Returns:
        None when the histogram is empty.
    """
    if len(bounds) != len(cumulative) or not bounds or not math.isinf(bounds[-1]):
        raise ValueError("a histogram needs one cumulative count per bound, the last bound +Inf")
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, count in enumerate(cumulative) if count >= rank)
    if math.isinf(bounds[index]):
        return float(bounds[-2]) if len(bounds) > 1 else None
    lower = bounds[index - 1] if index > 0 else 0.0
    below = cumulative[index - 1] if index > 0 else 0.0
    inside = cumulative[index] - below
    if inside <= 0:
        return float(bounds[index])
    return float(lower + (bounds[index] - lower) * (rank - below) / inside)


def bucket_counts(values: Sequence[float], weights: Sequence[float], bounds: Sequence[float]) -> list[float]:
    """Cumulative weighted counts of ``values`` at each of ``bounds`` (a value equal to a bound is in its
    bucket: ``le``, less or equal)."""
    counts = [0.0] * len(bounds)
    for value, weight in zip(values, weights, strict=True):
        index = bisect.bisect_left(bounds, value)
        if index < len(counts):
            counts[index] += weight
    running, cumulative = 0.0, []
    for count in counts:
        running += count
        cumulative.append(running)
    return cumulative
