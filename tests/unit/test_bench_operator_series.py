"""``edgeaigc bench-operator --check``: the Prometheus figures of issue 15 against their targets."""

from __future__ import annotations

from edgeaigc.cluster.bench_operator import TARGETS, check_targets
from edgeaigc.operator.observe import QUERIES_PER_READ


def test_the_series_and_query_targets_are_checked_and_a_missing_figure_is_missed() -> None:
    keys = {target.key for target in TARGETS}
    assert {"observe_ms", "queries", "series"} <= keys
    met = {"observe_ms": {"p50": 250.0}, "queries": {"max": QUERIES_PER_READ}, "series": {"max": 13_000}}
    mine = ("observe_ms", "queries", "series")

    def verdicts(steady: dict[str, dict[str, float]]) -> dict[str, str]:
        lines = check_targets(steady)
        return {t.key: line.split(":")[0] for t, line in zip(TARGETS, lines, strict=True) if t.key in mine}

    assert verdicts(met) == {"observe_ms": "met", "queries": "met", "series": "met"}
    # Per-(camera, model) series as before issue 15, and one query per camera: both missed.
    missed = {**met, "series": {"max": 89_014}, "queries": {"max": 400}}
    assert verdicts(missed) == {"observe_ms": "met", "queries": "MISSED", "series": "MISSED"}
    assert set(verdicts({}).values()) == {"MISSED"}
