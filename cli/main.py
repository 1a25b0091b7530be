"""``edgeaigc``: one command with subcommands; each subcommand lives in the module it runs.

Exit codes: 0 success, 1 a target or check failed, 2 bad usage or input (argparse's own
convention), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module with ``add_arguments(parser)`` and ``run(args) -> int``, help line)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "benchmark": (
        "edgeaigc.policy.benchmark",
        "evaluate every policy on a scenario and write tables, plots, results.json",
    ),
    "train": ("edgeaigc.policy.train", "train a TD3 (or DDPG) placement policy on a scenario"),
    "bench-sb3": (
        "edgeaigc.policy.sb3_baseline",
        "our TD3 against Stable-Baselines3's TD3 on the same env and step budget (needs the sb3 extra)",
    ),
    "export": ("edgeaigc.policy.export", "export a trained actor checkpoint to ONNX"),
    "simulate": ("edgeaigc.policy.simulate", "run one policy on a scenario and print per-slot figures"),
    "serve": ("edgeaigc.inference.server.cli", "serve ONNX models over the Open Inference Protocol (KServe v2 REST)"),
    "fetch-model": ("edgeaigc.inference.delivery.cli", "put a model's ONNX file in place, verified and within budget"),
    "gateway": ("edgeaigc.inference.gateway.cli", "edge gateway: local replica on a hit, cloud relay on a miss"),
    "camera": (
        "edgeaigc.inference.pipeline.camera",
        "play a video or generated scene against a gateway and report latency",
    ),
    "bench-serving": (
        "edgeaigc.inference.bench.cli",
        "server overhead vs onnxruntime and KServe; per-model work per request",
    ),
    "bench-uplink": (
        "edgeaigc.inference.bench.uplink",
        "does the gateway hold each camera to its bandwidth share? contention and an idle camera, measured",
    ),
    "build-demo-models": (
        "edgeaigc.inference.demo_models.build",
        "train the demo vehicle detector and classifier on generated scenes, export ONNX, report held-out accuracy",
    ),
    "operator": ("edgeaigc.operator.cli", "run the edgeaigc operator (kopf) against the current cluster"),
    "demo": ("edgeaigc.cluster.demo", "the whole loop locally: cluster, Prometheus, twin, operator; TD3 vs a baseline"),
    "bench-operator": (
        "edgeaigc.cluster.bench_operator",
        "operator decision/reconcile time and API writes per interval",
    ),
    "bench-chaos": (
        "edgeaigc.cluster.chaos",
        "chaos soak on a real node under camera traffic: random kills, recovery times, invariants",
    ),
    "bench-quota": (
        "edgeaigc.cluster.bench_quota",
        "latency against the CPU limit (CFS quota) of a model's pod on the real node, and the system model's",
    ),
    "bench-resize": (
        "edgeaigc.cluster.bench_resize",
        "an in-place CPU resize of a model's pod under traffic on the real node: how soon latency follows",
    ),
    "bench-sim-to-real": (
        "edgeaigc.cluster.sim_to_real",
        "the system model's predictions against the real system on real nodes (demo --real, longer phases)",
    ),
    "twin": (
        "edgeaigc.cluster.twin.cli",
        "play the edge gateways of a fleet (traffic twin) and export their metrics for Prometheus",
    ),
    "images": ("edgeaigc.cluster.images", "build the images here (Debian base, buildah), cached; list, export"),
    "cluster": (
        "edgeaigc.cluster.cli",
        "a local Kubernetes control plane (etcd, apiserver, scheduler, kwok) without Docker",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeaigc",
        # No abbreviations: an unknown option must fail, not match a longer one (`serve --model X` was once taken
        # as `--model-repository X`, and every inference pod crashed).
        allow_abbrev=False,
        description="Model placement for edge AI: simulator, policies and tools of edgeaigc.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        sub.set_defaults(_module=module_name)
        # Arguments are added lazily below so that `edgeaigc --help` does not import torch.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Resolve the subcommand first, then let its module add its own arguments.
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        subparsers_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        module.add_arguments(subparsers_action.choices[command])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_subcommand(name: str, argv: Sequence[str] | None = None) -> int:
    """``edgeaigc NAME ARGV``: what a module's own ``python -m`` entry point runs (same parser, same exit codes)."""
    return main([name, *(sys.argv[1:] if argv is None else argv)])
