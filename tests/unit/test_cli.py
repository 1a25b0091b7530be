"""The ``edgeaigc`` command end to end on the small scenario (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def edgeaigc(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", *arguments], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_subcommand() -> None:
    result = edgeaigc("--help")
    assert result.returncode == 0
    for command in ("benchmark", "train", "export", "simulate", "cluster", "operator", "serve"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["benchmark", "simulate", "train", "export", "cluster", "operator", "serve"])
def test_every_subcommand_has_help(command: str) -> None:
    result = edgeaigc(command, "--help")
    assert result.returncode == 0 and "usage: edgeaigc" in result.stdout


def test_benchmark_writes_results_in_the_documented_shape(tmp_path: Path) -> None:
    result = edgeaigc(
        "benchmark", "--scenario", "tiny", "--seeds", "2", "--episode-slots", "12",
        "--policies", "random,lru,lfu,static_topk,myopic,oracle", "--output", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["scenario"] == "tiny" and document["seeds"] == [1000, 1001]
    assert set(document["policies"]) == {"random", "lru", "lfu", "static_topk", "myopic", "oracle"}
    for figures in document["policies"].values():
        for metric in ("hit_rate", "mean_response_time_s", "p95_response_time_s", "cost", "churn"):
            assert set(figures[metric]) == {"mean", "ci95"}
            assert figures[metric]["mean"] >= 0 and figures[metric]["ci95"] >= 0
    # The oracle is a lower bound on every policy's objective.
    oracle = document["policies"]["oracle"]["objective"]["mean"]
    assert all(oracle <= p["objective"]["mean"] + 1e-9 for p in document["policies"].values())
    for name in ("results.md", "metrics.png", "timeline.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| oracle |" in (tmp_path / "results.md").read_text()


def test_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    missing = edgeaigc("benchmark", "--scenario", "atlantis", "--output", str(tmp_path))
    assert missing.returncode == 2 and "neither a bundled scenario" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\ncloud: {core_speed: 1}\n")
    result = edgeaigc("simulate", "--scenario", str(broken), "--policy", "lru")
    assert result.returncode == 2 and "is required" in result.stderr
    unknown = edgeaigc("benchmark", "--scenario", "tiny", "--policies", "lru,genius", "--output", str(tmp_path))
    assert unknown.returncode == 2 and "genius" in unknown.stderr


def test_simulate_prints_a_summary() -> None:
    result = edgeaigc("simulate", "--scenario", "tiny", "--policy", "lru", "--episode-slots", "10", "--every", "5")
    assert result.returncode == 0, result.stderr
    assert "lru on tiny (seed 1000): hit rate" in result.stdout


def test_the_operators_peer_identity_needs_no_password_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass
    import pwd

    from edgeaigc.operator.cli import peer_identity

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for variable in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(KeyError):
        getpass.getuser()  # what kopf's own detection calls, as in a container running as uid 65532
    assert peer_identity().startswith(f"uid-{__import__('os').getuid()}@")
