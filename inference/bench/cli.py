"""``edgeaigc bench-serving``: figures for the model server (printed, not timed tests).

Three parts (``--parts``, default all):

- **overhead**: requests/s and p50/p99 latency of onnxruntime called in-process and of
  ``edgeaigc serve`` on loopback, same model, same input, at several concurrencies.
  The in-process baseline is ``concurrency`` threads sharing one session, tried with one
  intra-op thread per run and with one per core; its best setting is the reference. The server
  is driven by a lean closed-loop load generator in this process (one keep-alive HTTP/1.1
  connection per client, the request encoded once, every response read in full); bodies use the
  binary tensor extension both ways (what clients use for images). The generator shares the
  machine's cores with the server, so its CPU per request is reported, and the best raw setting
  is measured once more with that much CPU taken by a spinning process: the most any server
  driven by that generator could reach.
- **peer**: the same model behind KServe's Python model server (``kserve`` package) with the same
  load generator. kserve is run from a separate virtualenv (``--kserve-python``; it pins many
  packages, so it never goes into the project's environment) through the peer harness
  :mod:`edgeaigc.inference.bench.kserve_peer`, both as KServe's examples write a model (a plain
  ``def predict``) and with ``predict`` in a thread pool.
- **work**: milliseconds of one request per model at one core (one intra-op thread), written as a
  calibration file to ``--calibration-out`` (default ``work_ms.json`` here; the format is
  ``docs/calibration.md``). A scenario reads such a file through its ``calibration`` key; the
  shipped one is ``policy/calibration/work_ms.json`` (``--calibration-out
  policy/calibration/work_ms.json`` in a checkout replaces it).

The model is YOLOX-Nano from ``../shared/data`` when present (or ``--model``), else a generated
convolutional stand-in of similar cost (needs the ``onnx`` package). Every load is bounded by
``--requests`` per level and ``--max-seconds`` per level and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.inference.bench.calibration import machine_state, measure_work, write_calibration
from edgeaigc.inference.bench.load import (
    HEADER,
    RAW,
    LoadFigures,
    free_port,
    http_load,
    our_server_command,
    process,
    raw_load,
    raw_without_client_share,
    request_body,
)
from edgeaigc.inference.bench.models import example_input, session, standin_detector

#: ../shared/data beside the repository (development machines); never inside it.
SHARED_YOLOX = Path(__file__).resolve().parents[3] / "shared" / "data" / "yolox_nano.onnx"
#: Where ``--parts work`` writes the calibration unless told: the working directory, not the package.
DEFAULT_CALIBRATION_OUT = "work_ms.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts", default="overhead,peer,work", help="comma-separated: overhead, peer, work (default: all)"
    )
    parser.add_argument("--model", metavar="PATH", help="ONNX model (default: ../shared/data YOLOX-Nano or a stand-in)")
    parser.add_argument("--concurrency", default="1,2,4,8", help="load levels (default: 1,2,4,8)")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (default: 200)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longest a level runs (default: 20)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="overhead: run the sweep this many times, interleaved, and keep each level's best (default: 1)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our server's onnxruntime threads")
    parser.add_argument(
        "--kserve-python",
        default="/tmp/kserve-venv/bin/python",
        metavar="PATH",
        help="Python of a virtualenv with kserve and onnxruntime (default: /tmp/kserve-venv/bin/python)",
    )
    parser.add_argument(
        "--calibration-out",
        "--work-output",  # its earlier name
        dest="calibration_out",
        default=DEFAULT_CALIBRATION_OUT,
        metavar="PATH",
        help=f"work: the calibration file to write (docs/calibration.md; default: {DEFAULT_CALIBRATION_OUT})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")


def run(args: argparse.Namespace) -> int:
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"overhead", "peer", "work"}
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    bad = not levels or min(levels) < 1 or args.requests < 1 or args.max_seconds <= 0 or args.repeats < 1
    if unknown or not parts or bad:
        print(
            "edgeaigc bench-serving: bad --parts, --concurrency, --requests, --max-seconds or --repeats",
            file=sys.stderr,
        )
        return 2
    state = machine_state()
    print(f"machine: {state}")
    results: dict[str, Any] = {"machine": state, "levels": []}
    with tempfile.TemporaryDirectory(prefix="edgeaigc-bench-") as scratch:
        workdir = Path(scratch)
        if args.model:
            model_path, is_yolox = Path(args.model), "yolox" in Path(args.model).name.lower()
        elif SHARED_YOLOX.is_file():
            model_path, is_yolox = SHARED_YOLOX, True
        else:
            model_path, is_yolox = standin_detector(workdir / "standin.onnx"), False
        name = "detector"
        repository = workdir / "repository"
        (repository / name).mkdir(parents=True)
        # A copy: the server refuses links that lead out of its repository.
        shutil.copyfile(model_path, repository / name / "model.onnx")
        print(f"model: {model_path} ({'YOLOX-Nano' if is_yolox else 'generated stand-in'})")
        sess = session(model_path)
        feed = example_input(sess)
        load = infer_load(args, name, *request_body(feed))
        figures: list[LoadFigures] = []
        if parts & {"overhead", "peer"}:
            print(HEADER)
        if "overhead" in parts:
            figures += overhead(args, levels, model_path, sess, feed, repository, load)
        if "peer" in parts:
            harness = Path(__file__).with_name("kserve_peer.py")
            if not Path(args.kserve_python).is_file():
                print(f"peer skipped: no kserve Python at {args.kserve_python}", file=sys.stderr)
            else:
                for threaded in (False, True):
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    command = [args.kserve_python, str(harness), "--model", str(model_path), "--name", name]
                    command += ["--port", str(port)] + (["--threaded"] if threaded else [])
                    label = "kserve (predict in threads)" if threaded else "kserve (plain def predict)"
                    with process(command, url) as pid:
                        figures += [load(label, url, concurrency, pid) for concurrency in levels]
        results["levels"] = [{**asdict(f), "throughput": f.throughput} for f in figures]
        if figures:
            print(summarise(figures))
        if "work" in parts:
            models = measure_work(model_path, is_yolox, workdir)
            write_calibration(Path(args.calibration_out), models, state)
            results["work"] = models
            print(f"work per request (ms at one core) written to {args.calibration_out}:")
            for model, entry in models.items():
                print(f"  {model:<22} {entry['work_ms']:>9.2f}  ({entry['basis']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


#: One load level against a server: (system label, base URL, concurrency, server pid) -> printed figures.
InferLoad = Callable[[str, str, int, int], LoadFigures]


def infer_load(args: argparse.Namespace, name: str, body: bytes, headers: dict[str, str]) -> InferLoad:
    """The same infer request for model ``name``, at ``args.requests`` / ``args.max_seconds`` per level."""

    def run_level(system: str, base_url: str, concurrency: int, pid: int) -> LoadFigures:
        url = f"{base_url}/v2/models/{name}/infer"
        figures = http_load(system, url, body, headers, concurrency, args.requests, args.max_seconds, pid)
        print(figures.row(), flush=True)
        return figures

    return run_level


def overhead(
    args: argparse.Namespace,
    levels: Sequence[int],
    model_path: Path,
    sess: Any,
    feed: dict[str, np.ndarray],
    repository: Path,
    load: InferLoad,
) -> list[LoadFigures]:
    """Raw onnxruntime (one and all cores' intra-op threads) and our server at every level.

    With ``--repeats`` the whole sweep runs that many times, each system measured right after
    the others at the same level (so a burst of load from other work hits them alike), and the
    best run of each (system, concurrency) is kept: load from elsewhere only ever slows a run.
    """
    thread_options = sorted({1, os.cpu_count() or 1})
    raw_sessions = {threads: sess if threads == 1 else session(model_path, threads) for threads in thread_options}
    runs: list[LoadFigures] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(our_server_command(repository, port, args.workers), url) as pid:
        for _ in range(args.repeats):
            for concurrency in levels:
                for threads, raw_sess in raw_sessions.items():
                    runs.append(raw_load(raw_sess, feed, concurrency, args.requests, args.max_seconds, threads))
                    print(runs[-1].row(), flush=True)
                runs.append(load(f"edgeaigc serve (workers={args.workers})", url, concurrency, pid))
    best = best_runs(runs)
    for _ in range(args.repeats):
        runs.append(raw_without_client_share(best, model_path, feed, args.requests, args.max_seconds))
        print(runs[-1].row(), flush=True)
    return best_runs(runs)


def best_runs(runs: Sequence[LoadFigures]) -> list[LoadFigures]:
    """The run of highest throughput of each (system, concurrency), in first-seen order."""
    best: dict[tuple[str, int], LoadFigures] = {}
    for run in runs:
        key = (run.system, run.concurrency)
        if key not in best or run.throughput > best[key].throughput:
            best[key] = run
    return list(best.values())


def summarise(figures: Sequence[LoadFigures]) -> str:
    """Best throughput per system and the issue's two ratios."""
    best: dict[str, LoadFigures] = {}
    for figure in figures:
        if figure.system not in best or figure.throughput > best[figure.system].throughput:
            best[figure.system] = figure
    lines = ["best concurrency per system:"]
    for system, figure in best.items():
        lines.append(
            f"  {system:<36} {figure.throughput:7.1f} req/s at {figure.concurrency} (p99 {figure.p99_ms:.1f} ms)"
        )
    ours = next((f for s, f in best.items() if s.startswith("edgeaigc")), None)
    raws = [f for s, f in best.items() if s.startswith(RAW) and " - " not in s]
    raw = max(raws, key=lambda f: f.throughput) if raws else None
    if ours and raw:
        lines.append(
            f"  ours / raw onnxruntime ({raw.system}, {raw.concurrency}): "
            f"{ours.throughput / raw.throughput:.2f} (target >= 0.9)"
        )
        client_cores = (ours.client_cpu_ms or 0.0) * ours.throughput / 1000.0
        lines.append(
            f"  load generator: {ours.client_cpu_ms or 0.0:.2f} ms CPU per request = {client_cores:.2f} core "
            f"of {os.cpu_count()} at our best level"
        )
        ceiling = next((f for s, f in best.items() if s.startswith(RAW) and " - " in s), None)
        if ceiling:
            lines.append(
                f"  ours / raw onnxruntime with the generator's CPU taken away ({ceiling.throughput:.1f} req/s): "
                f"{ours.throughput / ceiling.throughput:.2f}"
            )
        if ours.server_cpu_ms and raw.server_cpu_ms:
            lines.append(
                f"  CPU per request: server {ours.server_cpu_ms:.1f} ms, onnxruntime alone {raw.server_cpu_ms:.1f} ms "
                f"({raw.server_cpu_ms / ours.server_cpu_ms:.2f})"
            )
    peers = [f for s, f in best.items() if s.startswith("kserve")]
    if ours and peers:
        peer = max(peers, key=lambda f: f.throughput)
        lines.append(
            f"  ours / best kserve: {ours.throughput / peer.throughput:.2f} (target >= 1.5); "
            f"p99 {ours.p99_ms:.1f} vs {peer.p99_ms:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.bench.cli``, the same as ``edgeaigc bench-serving``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("bench-serving", argv)


if __name__ == "__main__":
    sys.exit(main())
