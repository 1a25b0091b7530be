"""Quantiles of latency histograms, read as Prometheus reads them (cluster/histogram.py)."""

from __future__ import annotations

import math

import pytest

from edgeaigc.cluster.histogram import bucket_counts, histogram_quantile

INF = math.inf


def test_the_quantile_is_linear_within_the_bucket_its_rank_falls_in() -> None:
    # 50 requests up to 100 ms, 50 more up to 200 ms: the 95th of 100 is 45/50 of the way through the second
    assert histogram_quantile(0.95, [0.1, 0.2, INF], [50, 100, 100]) == pytest.approx(0.19)
    # in the first bucket the lower bound is 0
    assert histogram_quantile(0.5, [0.1, 0.2, INF], [100, 100, 100]) == pytest.approx(0.05)
    # past the last finite bound: that bound (Prometheus' rule), and nothing counted: no quantile
    assert histogram_quantile(0.95, [0.1, 0.2, INF], [10, 20, 100]) == 0.2
    assert histogram_quantile(0.95, [0.1, 0.2, INF], [0, 0, 0]) is None
    with pytest.raises(ValueError, match="Inf"):
        histogram_quantile(0.95, [0.1, 0.2], [1, 2])


def test_predicted_values_go_into_the_same_buckets_less_or_equal_to_each_bound() -> None:
    bounds = [0.05, 0.1, INF]
    assert bucket_counts([0.05, 0.06, 0.2], [1.0, 2.0, 0.5], bounds) == [1.0, 3.0, 3.5]
    # a tight predicted distribution at 60 ms reads as the observed one would through these buckets
    cumulative = bucket_counts([0.06] * 20, [1.0] * 20, bounds)
    assert histogram_quantile(0.95, bounds, cumulative) == pytest.approx(0.0975)
