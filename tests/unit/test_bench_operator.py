"""bench-operator's figures that need no cluster: placement moves and the --check targets."""

from __future__ import annotations

from edgeaigc.cluster.bench_operator import TARGETS, Target, check_targets, moves
from edgeaigc.operator.decide import Decision


def test_moves_count_new_and_evicted_placements_against_those_found() -> None:
    decision = Decision(
        previous_placement={"pi-0": ["a", "b"], "pi-1": ["a", "c"]},
        newly_cached=[("pi-0", "d")],
        evicted=[("pi-0", "b")],
    )
    assert moves(decision) == (2, 50.0)
    assert moves(Decision()) == (0, 0.0)  # nothing placed yet: no share to speak of


def test_check_reports_each_target_met_or_missed() -> None:
    steady = {
        "decide_plan_ms": {"p50": 120.0, "max": 400.0},
        "reconcile_ms": {"p50": 1500.0, "max": 2000.0},
        "moved_percent": {"p50": 1.0, "max": 3.0},
        "unexplained_writes": {"p50": 0.0, "max": 1.0},
    }
    mine = tuple(t for t in TARGETS if t.key in steady)
    lines = check_targets(steady, mine)
    assert [line.split(":")[0] for line in lines] == ["met", "MISSED", "met", "met"]
    assert "reconcile p50 1500.0ms (target <= 1000ms)" in lines[1]


def test_a_figure_that_was_not_measured_misses_its_target_and_targets_extend() -> None:
    extra = (*TARGETS, Target("series", "series_count", 10_000, ""))
    lines = check_targets({}, extra)
    assert len(lines) == len(TARGETS) + 1 and all(line.startswith("MISSED") for line in lines)
