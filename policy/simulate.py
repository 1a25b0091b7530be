"""``edgeaigc simulate``: one policy on one episode, a line per interval, then the summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgeaigc.policy.benchmark import POLICY_NAMES, online_policy, run_online_episode, run_oracle_episode
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.registry import PolicyUnavailable
from edgeaigc.policy.scenario import ScenarioError, load_scenario


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="traffic-city", help="bundled name or YAML path (default: traffic-city)")
    parser.add_argument("--policy", default="td3", choices=POLICY_NAMES, help="policy to run (default: td3)")
    parser.add_argument("--seed", type=int, default=1000, help="episode seed (default: 1000)")
    parser.add_argument("--episode-slots", type=int, default=None, help="override the episode length")
    parser.add_argument("--every", type=int, default=10, help="print a line every N slots (default: 10)")
    parser.add_argument("--actor-dir", type=Path, default=None, help="directory of <scenario>-<td3|ddpg>.onnx actors")


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        print(f"edgeaigc simulate: {error}", file=sys.stderr)
        return 2
    if args.episode_slots:
        scenario = scenario.with_overrides(episode_slots=args.episode_slots)
    env = EdgePlacementEnv(scenario)
    try:
        if args.policy == "oracle":
            result = run_oracle_episode(env, args.seed)
        else:
            policy, note = online_policy(args.policy, scenario, args.actor_dir)
            if note:
                print(f"{args.policy}: {note}")
            result = run_online_episode(env, policy, args.seed)
    except PolicyUnavailable as error:
        print(f"edgeaigc simulate: {error}", file=sys.stderr)
        return 2
    print(f"{'slots':>9}  {'hit rate':>8}  {'objective':>9}")
    hits, objectives = np.array(result.hit_rate_per_slot), np.array(result.objective_per_slot)
    for start in range(0, len(hits), max(args.every, 1)):
        end = min(start + args.every, len(hits))
        print(f"{start + 1:>4}-{end:<4}  {hits[start:end].mean():>8.1%}  {objectives[start:end].mean():>9.3f}")
    m = result.metrics
    print(
        f"\n{args.policy} on {scenario.name} (seed {args.seed}): hit rate {m['hit_rate']:.1%}, "
        f"mean response {m['mean_response_time_s'] * 1000:.0f} ms, p95 {m['p95_response_time_s'] * 1000:.0f} ms, "
        f"cost ${m['cost']:.3f}/h, {m['churn']:.1f} downloads/h, objective {m['objective']:.3f}"
    )
    return 0
