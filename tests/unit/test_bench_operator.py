"""bench-operator's figures that need no cluster: placement moves, the --check targets, process usage."""

from __future__ import annotations

import subprocess
import sys
import time

from edgeaigc.cluster.bench_operator import (
    TARGETS,
    ProcessUsage,
    Target,
    check_targets,
    fleet,
    moves,
    shard_name,
    usage_summary,
)
from edgeaigc.operator.decide import Decision
from edgeaigc.policy.shard import older_overlaps, selected_nodes


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


def test_process_usage_reports_a_real_process_cpu_and_memory_and_none_once_it_is_gone() -> None:
    # A child that holds 64 MiB it has written (resident) and burns CPU for a bounded while.
    code = (
        "import time; b = b'x' * (64 << 20); end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\ntime.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        usage = ProcessUsage({"child": child.pid})
        deadline = time.monotonic() + 20
        figures = usage.sample()["child"]
        burnt = 0.0
        while time.monotonic() < deadline and burnt < 0.4:
            time.sleep(0.2)
            figures = usage.sample()["child"]
            burnt += (figures["cpu_percent"] or 0.0) / 100 * 0.2
        assert figures["rss_mib"] is not None and figures["rss_mib"] >= 64
        assert burnt > 0.0, "the child's CPU seconds never showed"
    finally:
        child.kill()
        child.wait()
    assert usage.sample()["child"] == {"cpu_percent": None, "rss_mib": None}


def test_usage_summary_takes_p50_and_max_over_the_samples_that_have_a_figure() -> None:
    samples: list[dict[str, dict[str, float | None]]] = [
        {"etcd": {"cpu_percent": 10.0, "rss_mib": 100.0}},
        {"etcd": {"cpu_percent": 30.0, "rss_mib": None}},
        {"etcd": {"cpu_percent": 20.0, "rss_mib": 120.0}},
    ]
    summary = usage_summary(samples)
    assert summary["etcd"]["cpu_percent"] == {"p50": 20.0, "max": 30.0}
    assert summary["etcd"]["rss_mib"] == {"p50": 110.0, "max": 120.0}


def test_shards_split_the_nodes_into_disjoint_equal_groups_with_a_policy_each() -> None:
    documents = fleet("bench", edge_nodes=10, models=3, cameras=20, algorithm="lru", shards=4)
    nodes = [d for d in documents if d["kind"] == "EdgeNode"]
    policies = [d for d in documents if d["kind"] == "PlacementPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [shard_name(k) for k in range(4)]
    groups = {p["metadata"]["name"]: selected_nodes(p, nodes) for p in policies}
    assert sorted(n for group in groups.values() for n in group) == sorted(n["metadata"]["name"] for n in nodes)
    assert all(len(group) in (2, 3) for group in groups.values())
    assert all(not older_overlaps(p, policies, nodes) for p in policies)
    # One shard: one policy without a selector, as before.
    (single,) = [d for d in fleet("bench", 10, 3, 20, "lru") if d["kind"] == "PlacementPolicy"]
    assert "edgeNodeSelector" not in single["spec"] and single["metadata"]["name"] == "bench"
