"""``edgeaigc benchmark``: every policy on the same scenario and seeds, with confidence intervals.

Each policy plays the same episodes (same demand, links and Poisson draws for a given seed).
Online policies decide from the observation only; the oracle is given the episode's future.
Figures per episode, then mean and 95 % confidence interval (Student t) over seeds:

- ``hit_rate``: requests served by a model cached on their edge node / all requests;
- ``mean_response_time_s`` and ``p95_response_time_s`` over all requests;
- ``cost``: money per hour of operation (cloud compute, transfer, edge energy, downloads);
- ``churn``: models newly downloaded to edge nodes per hour;
- ``backhaul_gb``: gigabytes of those downloads fetched from the cloud over the backhaul, per hour;
- ``peer_gb``: gigabytes fetched from a neighbour of the same site instead (backhaul bytes saved by
  peer-to-peer distribution, ``fetch-model --peer``), per hour; zero unless the scenario's nodes share sites;
- ``slo_violation_rate``: share of requests slower than the scenario's ``slo_s``;
- ``objective``: mean per slot of ``-reward = alpha*mean_rt/t_ref + beta*cost_per_request/c_ref``
  — what every policy is trying to minimise, and what the oracle bounds from below.

Outputs in ``--output``: ``results.json`` (schema in :func:`results_document`), ``results.md``,
``metrics.png`` (bars with CIs) and ``timeline.png`` (hit rate and objective over the first seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from tqdm import tqdm

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.guarded import GUARDED_SUFFIX, GuardedPolicy
from edgeaigc.policy.registry import (
    FALLBACK_ACTOR_SCENARIO,
    LEARNED_POLICIES,
    PolicyUnavailable,
    make_policy,
    shipped_actor,
    shipped_actors,
)
from edgeaigc.policy.scenario import BUNDLED_SCENARIOS, Scenario, ScenarioError, load_scenario
from edgeaigc.policy.system_model import RESPONSE_TIME_BINS, histogram_quantile, node_rates_of

POLICY_NAMES: tuple[str, ...] = ("random", "lru", "lfu", "static_topk", "myopic", "ddpg", "td3", "general", "oracle")
#: Learned policies behind the operator's guard (:mod:`.guarded`): not run unless named, as each runs every
#: heuristic's counterfactual too.
GUARDED_POLICY_NAMES: tuple[str, ...] = ("td3+guard", "ddpg+guard", "general+guard")
KNOWN_POLICY_NAMES: tuple[str, ...] = (*POLICY_NAMES, *GUARDED_POLICY_NAMES)
METRICS: tuple[str, ...] = (
    "hit_rate",
    "mean_response_time_s",
    "p95_response_time_s",
    "cost",
    "churn",
    "backhaul_gb",
    "peer_gb",
    "slo_violation_rate",
    "objective",
)
#: Seeds at and above this are never used for training (held out for evaluation).
DEFAULT_SEED_BASE = 1000


@dataclasses.dataclass
class EpisodeResult:
    """One policy on one seed."""

    metrics: dict[str, float]
    hit_rate_per_slot: list[float]
    objective_per_slot: list[float]
    decision_seconds: float


def online_policy(
    name: str, scenario: Scenario, actor_dir: Path | None = None, env: EdgePlacementEnv | None = None
) -> tuple[PlacementPolicy, str]:
    """An online policy by name, with a note for the report (where a learned policy's actor came from).

    ``<learned>+guard`` (``general+guard``, ``td3+guard``) is that policy behind the operator's guard
    (:mod:`.guarded`, the CRD's guard defaults), planning with ``env``'s churn limit and switching horizon.
    """
    if name.endswith(GUARDED_SUFFIX):
        learned, note = online_policy(name.removesuffix(GUARDED_SUFFIX), scenario, actor_dir, env)
        guarded = GuardedPolicy(
            learned,
            churn_limit=env.churn_limit if env else None,
            switching_horizon_slots=env.switching_horizon_slots if env else 0.0,
        )
        return guarded, f"{note + '; ' if note else ''}behind the guard (margin, window and dwell: the CRD's defaults)"
    if name in LEARNED_POLICIES:
        path, note = shipped_actor(scenario.name, name, actor_dir)
        return make_policy(name, path), note
    if name == "general":
        # The general actor whatever the scenario (td3 prefers a scenario's own actor).
        path = (actor_dir or shipped_actors()) / f"{FALLBACK_ACTOR_SCENARIO}-td3.onnx"
        if not path.exists():
            raise PolicyUnavailable(f"no general actor {path} (train one with `edgeaigc train --family default`)")
        policy = make_policy("td3", path)
        policy.name = "general"
        return policy, f"the general actor {path.name}"
    return make_policy(name), ""


def _accumulate(env: EdgePlacementEnv, step: Callable[[], tuple[float, dict[str, Any]]]) -> EpisodeResult:
    """Run ``step`` until the episode ends, summing what the env reports."""
    scenario = env.scenario
    totals = {"requests": 0.0, "hits": 0.0, "rt": 0.0, "slo": 0.0, "cost": 0.0, "downloads": 0.0}
    totals |= {"backhaul_mb": 0.0, "peer_mb": 0.0}
    histogram = np.zeros(len(RESPONSE_TIME_BINS) - 1)
    hit_rates: list[float] = []
    objectives: list[float] = []
    decision_seconds = 0.0
    truncated = False
    while not truncated:
        started = time.perf_counter()
        reward, info = step()
        decision_seconds += time.perf_counter() - started
        truncated = bool(info["truncated"])
        totals["requests"] += info["requests"]
        totals["hits"] += info["hits"]
        totals["rt"] += info["mean_response_time_s"] * info["requests"]
        totals["slo"] += info["slo_violations"]
        totals["cost"] += info["cost"]
        totals["downloads"] += info["downloads"]
        totals["backhaul_mb"] += info["backhaul_download_mb"]
        totals["peer_mb"] += info["peer_download_mb"]
        histogram += info["response_time_histogram"]
        hit_rates.append(info["hit_rate"])
        objectives.append(-reward)
    hours = len(objectives) * scenario.slot_seconds / 3600.0
    requests = max(totals["requests"], 1e-12)
    metrics = {
        "hit_rate": totals["hits"] / requests,
        "mean_response_time_s": totals["rt"] / requests,
        "p95_response_time_s": histogram_quantile(histogram, 0.95),
        "cost": totals["cost"] / hours,
        "churn": totals["downloads"] / hours,
        "backhaul_gb": totals["backhaul_mb"] / 1000.0 / hours,
        "peer_gb": totals["peer_mb"] / 1000.0 / hours,
        "slo_violation_rate": totals["slo"] / requests,
        "objective": float(np.mean(objectives)),
    }
    return EpisodeResult(metrics, hit_rates, objectives, decision_seconds)


def run_online_episode(env: EdgePlacementEnv, policy: PlacementPolicy, seed: int) -> EpisodeResult:
    """One episode of an online policy: it sees only ``env.observation``."""
    env.reset(seed=seed)
    policy.reset(env.scenario, seed)

    def step() -> tuple[float, dict[str, Any]]:
        assert env.observation is not None
        _, reward, _, truncated, info = env.step(policy.act(env.observation))
        return reward, {**info, "truncated": truncated}

    return _accumulate(env, step)


def run_oracle_episode(env: EdgePlacementEnv, seed: int) -> EpisodeResult:
    """One episode of the clairvoyant oracle: exact plans computed from the whole trace."""
    from edgeaigc.policy.oracle import oracle_plans, solve_oracle

    env.reset(seed=seed)
    assert env.trace is not None
    solution = solve_oracle(env.scenario, env.trace)
    plans = iter(oracle_plans(env.scenario, env.trace, solution))

    def step() -> tuple[float, dict[str, Any]]:
        _, reward, _, truncated, info = env.step_plan(next(plans))
        return reward, {**info, "truncated": truncated}

    return _accumulate(env, step)


def hit_rate_ceiling(scenario: Scenario, counts: np.ndarray, limit: int = 4096) -> float | None:
    """The best hit rate any cache could have on this demand: per node and slot, the storage
    knapsack of the models requested there, with the realised demand known in advance and
    latency, cost and downloads ignored. None when a node has too many feasible caches.

    Args:
        counts: realised request rates ``[T, U, M]`` of the decided slots.
    """
    from edgeaigc.policy.myopic import TooManySubsets, feasible_subsets

    node_rates = node_rates_of(scenario, counts)  # [T, E, M]
    served = 0.0
    for e in range(scenario.num_nodes):
        requested = node_rates[:, e, :].sum(axis=0) > 0
        try:
            subsets = feasible_subsets(scenario.model_size_mb, float(scenario.node_storage_mb[e]), requested, limit)
        except TooManySubsets:
            return None
        served += float((node_rates[:, e, :] @ subsets.T.astype(float)).max(axis=1).sum())
    total = float(node_rates.sum())
    return served / total if total > 0 else None


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Mean and half-width of the 95 % confidence interval (Student t over seeds)."""
    array = np.asarray(values, float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "ci95": 0.0}
    half_width = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return {"mean": mean, "ci95": half_width}


def results_document(
    scenario: Scenario, seeds: Sequence[int], per_policy: dict[str, list[EpisodeResult]], notes: dict[str, str]
) -> dict[str, Any]:
    """``{"scenario", "seeds", "policies": {name: {metric: {"mean", "ci95"}}}, "notes"}``."""
    policies = {
        name: {metric: summarise([r.metrics[metric] for r in results]) for metric in METRICS}
        for name, results in per_policy.items()
    }
    _, nodes_per_site = np.unique(scenario.node_site, return_counts=True)
    return {
        "scenario": scenario.name,
        "seeds": list(seeds),
        # Sites of more than one node, where a download can come from a peer (then the table shows it).
        "shared_sites": int((nodes_per_site > 1).sum()),
        "policies": policies,
        "notes": notes,
    }


def target_checks(document: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets for TD3: (description, met or None if not measurable, figures)."""
    policies = document["policies"]
    checks: list[tuple[str, bool | None, str]] = []
    if "td3" not in policies:
        return checks
    td3 = policies["td3"]
    weak = [p for p in ("random", "lru", "lfu") if p in policies]
    if weak:
        best_name = max(weak, key=lambda p: policies[p]["hit_rate"]["mean"])
        best = policies[best_name]["hit_rate"]["mean"]
        ratio = td3["hit_rate"]["mean"] / best if best > 0 else math.inf
        checks.append(
            ("TD3 hit rate >= 1.41 x best of random/LRU/LFU", ratio >= 1.41, f"{ratio:.2f}x ({best_name} {best:.3f})")
        )
    if "myopic" in policies:
        td3_obj, myopic_obj = td3["objective"]["mean"], policies["myopic"]["objective"]["mean"]
        checks.append(
            ("TD3 objective no worse than myopic", td3_obj <= myopic_obj, f"{td3_obj:.4f} vs {myopic_obj:.4f}")
        )
    if "oracle" in policies:
        td3_obj, oracle_obj = td3["objective"]["mean"], policies["oracle"]["objective"]["mean"]
        gap = td3_obj / oracle_obj - 1 if oracle_obj > 0 else math.inf
        checks.append(("TD3 objective within 10 % of the oracle", gap <= 0.10, f"+{gap:.1%}"))
    return checks


_LABELS = {
    "hit_rate": "hit rate",
    "mean_response_time_s": "mean response time (s)",
    "p95_response_time_s": "p95 response time (s)",
    "cost": "cost ($/h)",
    "churn": "downloads per hour",
    "backhaul_gb": "backhaul GB/h (downloads)",
    "peer_gb": "GB/h from site peers",
    "slo_violation_rate": "SLO violations",
    "objective": "objective (-reward per slot)",
}


def markdown_table(document: dict[str, Any]) -> str:
    """Policies as rows, metrics as columns, ``mean ± ci95``."""
    shown: tuple[str, ...] = ("hit_rate", "mean_response_time_s", "p95_response_time_s", "cost", "churn")
    if document.get("shared_sites"):
        shown += ("backhaul_gb", "peer_gb")
    shown += ("objective",)
    header = "| policy | " + " | ".join(_LABELS[m] for m in shown) + " |"
    rule = "|---|" + "---:|" * len(shown)
    rows = [header, rule]
    for name, figures in document["policies"].items():
        cells = []
        for metric in shown:
            value, ci = figures[metric]["mean"], figures[metric]["ci95"]
            cells.append(f"{value:.1%} ± {ci:.1%}" if metric == "hit_rate" else f"{value:.4g} ± {ci:.2g}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_plots(document: dict[str, Any], per_policy: dict[str, list[EpisodeResult]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(document["policies"])
    shown = ("hit_rate", "mean_response_time_s", "p95_response_time_s", "cost", "churn", "objective")
    figure, axes = plt.subplots(2, 3, figsize=(14, 7))
    colours = ["#d62728" if n == "td3" else "#7f7f7f" if n == "oracle" else "#1f77b4" for n in names]
    for axis, metric in zip(axes.ravel(), shown, strict=True):
        means = [document["policies"][n][metric]["mean"] for n in names]
        cis = [document["policies"][n][metric]["ci95"] for n in names]
        axis.bar(names, means, yerr=cis, color=colours, capsize=3)
        axis.set_title(_LABELS[metric])
        axis.tick_params(axis="x", rotation=45)
    figure.suptitle(f"{document['scenario']}: {len(document['seeds'])} seeds, mean ± 95 % CI")
    figure.tight_layout()
    figure.savefig(output / "metrics.png", dpi=100)
    plt.close(figure)

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    for name, results in per_policy.items():
        style = {"linewidth": 2.0} if name == "td3" else {"linewidth": 1.0, "alpha": 0.8}
        top.plot(results[0].hit_rate_per_slot, label=name, **style)
        bottom.plot(results[0].objective_per_slot, label=name, **style)
    top.set_ylabel("hit rate")
    bottom.set_ylabel("objective (-reward)")
    bottom.set_yscale("log")
    bottom.set_xlabel(f"slot (seed {document['seeds'][0]})")
    top.legend(ncol=4, fontsize=8)
    figure.tight_layout()
    figure.savefig(output / "timeline.png", dpi=100)
    plt.close(figure)


def run_benchmark(
    scenario: Scenario,
    policies: Sequence[str],
    seeds: Sequence[int],
    actor_dir: Path | None = None,
    progress: bool = True,
    switching_horizon_slots: float = 0.0,
    given: Mapping[str, PlacementPolicy] | None = None,
) -> tuple[dict[str, Any], dict[str, list[EpisodeResult]]]:
    """Evaluate ``policies`` on ``seeds``; policies that cannot run are reported in notes.

    ``switching_horizon_slots > 0`` makes every online policy's plan weigh a move's gain over that
    many slots against its switching cost, as the operator does (:func:`~edgeaigc.policy.plan.stable_cache`).
    ``given`` holds policies built by the caller (e.g. one trained a moment ago, or another
    library's agent wrapped as a :class:`PlacementPolicy`), evaluated under their key in
    ``policies`` instead of one looked up by name, so every policy is scored by the same code.
    """
    given = given or {}
    env = EdgePlacementEnv(scenario, switching_horizon_slots=switching_horizon_slots)
    per_policy: dict[str, list[EpisodeResult]] = {}
    notes: dict[str, str] = {}
    bar = tqdm(total=len(policies) * len(seeds), desc=scenario.name, unit="episode", disable=not progress)
    for name in policies:
        try:
            if name == "oracle":
                results = []
                for seed in seeds:
                    bar.set_postfix_str(f"{name} seed {seed}")
                    results.append(run_oracle_episode(env, seed))
                    bar.update()
                notes[name] = "clairvoyant: exact DP over caches with the realised future demand"
            else:
                policy, note = (given[name], "") if name in given else online_policy(name, scenario, actor_dir, env)
                if note:
                    notes[name] = note
                results = []
                for seed in seeds:
                    bar.set_postfix_str(f"{name} seed {seed}")
                    results.append(run_online_episode(env, policy, seed))
                    bar.update()
        except Exception as error:  # one policy failing must not lose the others' figures
            from edgeaigc.policy import oracle

            if not isinstance(error, PolicyUnavailable | getattr(oracle, "OracleTooLarge", PolicyUnavailable)):
                raise
            notes[name] = f"not run: {error}"
            bar.update(len(seeds) - (len(per_policy.get(name, []))))
            continue
        per_policy[name] = results
    bar.close()
    document = results_document(scenario, seeds, per_policy, notes)
    ceilings = []
    for seed in seeds:
        env.reset(seed=seed)
        assert env.trace is not None
        ceilings.append(hit_rate_ceiling(scenario, env.trace.counts[1:]))
    if all(ceiling is not None for ceiling in ceilings):
        document["hit_rate_ceiling"] = summarise([float(ceiling) for ceiling in ceilings if ceiling is not None])
    document["decision_ms_per_slot"] = {
        name: 1000 * float(np.mean([r.decision_seconds for r in results])) / scenario.episode_slots
        for name, results in per_policy.items()
    }
    return document, per_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgeaigc.policy.suite import SUITES  # the suite runs this module's benchmark

    parser.add_argument(
        "--scenario",
        default="traffic-city",
        help=f"bundled name ({', '.join(BUNDLED_SCENARIOS)}) or YAML path",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("bench-out"), help="directory for results (default: bench-out)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of evaluation seeds (default: 5)")
    parser.add_argument("--seed-base", type=int, default=DEFAULT_SEED_BASE, help="first seed (held out from training)")
    parser.add_argument(
        "--policies",
        default=",".join(POLICY_NAMES),
        help="comma-separated, from: " + ", ".join(KNOWN_POLICY_NAMES) + " (default: all but the +guard ones; "
        "<learned>+guard is that policy behind the operator's counterfactual guard, as the operator runs it)",
    )
    parser.add_argument("--episode-slots", type=int, default=None, help="override the scenario's episode length")
    parser.add_argument("--actor-dir", type=Path, default=None, help="directory of <scenario>-<td3|ddpg>.onnx actors")
    parser.add_argument(
        "--switching-horizon",
        type=float,
        default=0.0,
        metavar="SLOTS",
        help="online policies move a model only when its predicted gain over SLOTS slots exceeds its switching "
        "cost (download price and time), as the operator's spec.switchingHorizonSlots does; "
        "0 takes every policy's placement as it is (default: 0)",
    )
    parser.add_argument(
        "--check-targets",
        action="store_true",
        help="exit 1 if a TD3 target of issue 2 (with --suite: of issue 14) is missed",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--suite",
        choices=SUITES,
        default=None,
        help="instead of one scenario: every bundled scenario plus a held-out family's worlds, one row each, with "
        "LRU, LFU, static top-K, myopic, the general actor alone and behind the operator's guard, and the oracle "
        "(--policies narrows them)",
    )
    parser.add_argument("--only", default=None, help="with --suite: comma-separated scenario names to run")
    parser.add_argument(
        "--reuse", action="store_true", help="with --suite: keep policies already in <output>/<scenario>/results.json"
    )


def run_suite_command(args: argparse.Namespace) -> int:
    from edgeaigc.policy.suite import SUITE_POLICIES, markdown, run_suite

    explicit = args.policies != ",".join(POLICY_NAMES)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] if explicit else list(SUITE_POLICIES)
    unknown = [p for p in policies if p not in KNOWN_POLICY_NAMES]
    if unknown or args.seeds < 1:
        print(f"edgeaigc benchmark: unknown policies {unknown} or --seeds < 1", file=sys.stderr)
        return 2
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else None
    try:
        rows, totals = run_suite(args.suite, args.output, seeds, only, policies, args.reuse, not args.quiet)
    except (ScenarioError, ValueError) as error:
        print(f"edgeaigc benchmark: {error}", file=sys.stderr)
        return 2
    print(markdown(rows, totals, seeds))
    print(f"\nwrote {args.output / 'suite.json'} and suite.md")
    if args.check_targets and not all(totals["targets"].values()):
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.suite is not None:
        return run_suite_command(args)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        print(f"edgeaigc benchmark: {error}", file=sys.stderr)
        return 2
    if args.episode_slots:
        scenario = scenario.with_overrides(episode_slots=args.episode_slots)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in KNOWN_POLICY_NAMES]
    if unknown or args.seeds < 1 or args.switching_horizon < 0:
        print(
            f"edgeaigc benchmark: unknown policies {unknown}, --seeds < 1 or --switching-horizon < 0", file=sys.stderr
        )
        return 2
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    started = time.perf_counter()
    document, per_policy = run_benchmark(
        scenario,
        policies,
        seeds,
        args.actor_dir,
        progress=not args.quiet,
        switching_horizon_slots=args.switching_horizon,
    )
    document["switching_horizon_slots"] = args.switching_horizon
    document["wall_clock_s"] = round(time.perf_counter() - started, 1)
    output: Path = args.output
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    table = markdown_table(document)
    checks = target_checks(document)
    switching = f"switching horizon {args.switching_horizon:g} slots" if args.switching_horizon else "no switching cost"
    lines = [f"# Benchmark: {scenario.name}", "", f"Seeds {seeds}; {switching}; mean ± 95 % CI.", "", table, ""]
    if "hit_rate_ceiling" in document:
        ceiling = document["hit_rate_ceiling"]
        lines.append(
            f"- storage-limited hit-rate ceiling (perfect knowledge, latency/cost/downloads ignored): "
            f"{ceiling['mean']:.1%} ± {ceiling['ci95']:.1%}"
        )
    for name, note in document["notes"].items():
        lines.append(f"- {name}: {note}")
    if checks:
        lines += ["", "## Targets", ""]
        lines += [f"- {'met' if ok else 'MISSED'}: {what} ({figures})" for what, ok, figures in checks]
    (output / "results.md").write_text("\n".join(lines) + "\n")
    if per_policy:
        write_plots(document, per_policy, output)
    print("\n".join(lines))
    print(f"\nwrote {output / 'results.json'}, results.md, metrics.png, timeline.png")
    if args.check_targets and any(ok is False for _, ok, _ in checks):
        return 1
    return 0
