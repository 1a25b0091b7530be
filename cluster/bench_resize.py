"""``edgeaigc bench-resize``: an in-place CPU resize under traffic, and how soon the latency follows.

The operator changes a model's compute share by resizing its pod in place (the ``pods/resize``
subresource, :mod:`edgeaigc.operator.reconcile`): no restart, the kubelet rewrites the container's
CFS quota. The claim to check: a resize changes the latency a camera observes within one or two
decision intervals. This benchmark measures it on the local cluster's real node:

1. a replica of the model built as the operator builds one (:func:`~.bench_quota.replica`), pinned to
   the real node at CPU limit ``--from`` (100m by default: at 200m and above, YOLOX-Nano's latency on a
   2-core machine shared with other jobs is set as much by the host's load as by the quota, and a
   200m -> 800m resize measured at load 4-8 moved it by 16 % only);
2. a steady, bounded request stream from this machine to the pod (one client, ``--rate`` requests
   per second, at most one in flight: like a camera waiting for its answer), every request's send
   and answer time recorded;
3. after ``--phase-seconds`` the pod is resized to ``--to`` through the ``pods/resize`` subresource
   with the operator's patch (requests and limits of the inference container's CPU), and, unless
   ``--no-back``, back to ``--from`` after another phase. For each resize it records when the patch
   was sent, when the pod's status reported the new CPU (``containerStatuses[].resources``), when
   the container's and the pod's cgroups held the new quota on the node (``cpu.cfs_quota_us``: the
   node's cgroups are v1), and that the container did not restart;
4. the latency levels before and after each resize (medians of the phase before, and of the second
   half of the phase after) and the *settling time*: from the patch to the answer of the first
   request from which on every answer is closer (geometrically) to the new level than to the old.
   In decision intervals too (``--interval``, the demo's 10 s by default).

Writes ``resize.json`` (every request, every resize's timings, the levels) and ``resize.png`` to
``--output``. Exit 0 when every resize was applied without a restart, moved the latency the way
its limit says and settled within two decision intervals; 1 otherwise (or the cluster failed);
2 for bad input. Traffic goes only to the real node's pod address (198.18.0.0/15) on this machine;
the stream is bounded in count and time.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.cluster.bench_quota import NAMESPACE, SHARED_MODEL, cgroup_file, example_feed, replica
from edgeaigc.cluster.local import ClusterError
from edgeaigc.cluster.real_stack import NODE, RealStack, pod_ready, real_cluster, wait_until

#: A resize whose cgroup or status is not there after this long has failed.
APPLY_TIMEOUT_S = 60.0
#: How often the node's cgroup is read while a resize is under way (the resolution of its timing).
CGROUP_POLL_S = 0.05
#: How often the pod's status is read (a kubectl call: a process on a 2-core machine, so less often).
STATUS_POLL_S = 0.5
#: A resize settles within this many decision intervals, or the claim does not hold.
SETTLE_INTERVALS = 2.0
#: Answers whose median says the level (a single slow answer on a shared machine is noise).
SETTLE_WINDOW = 5
#: Levels closer than this ratio are one level (noise): no change to follow or settle to.
MIN_LEVEL_RATIO = 1.25


@dataclass
class Request:
    """One request of the stream: seconds since the stream started."""

    sent_s: float
    answered_s: float
    ok: bool

    @property
    def latency_ms(self) -> float:
        return (self.answered_s - self.sent_s) * 1000.0


@dataclass
class ResizeEvent:
    """One in-place resize and what the system and the stream did after it (seconds since the stream started)."""

    from_m: int
    to_m: int
    patch_sent_s: float
    patch_returned_s: float = math.nan
    status_applied_s: float = math.nan
    """The pod's status reported the new CPU limit (the kubelet's view)."""
    cgroup_applied_s: float = math.nan
    """The container's cgroup held the new quota on the node."""
    container_quota_us: int = 0
    pod_quota_us: int | None = None
    """The pod-level cgroup's quota after the resize (None: not found)."""
    status_resources: dict[str, Any] = field(default_factory=dict)
    allocated_resources: dict[str, Any] = field(default_factory=dict)
    restarts_before: int = 0
    restarts_after: int = 0
    level_before_ms: float = math.nan
    level_after_ms: float = math.nan
    settled_s: float | None = None
    """Seconds from the patch to the answer from which on the latency stays at the new level (None: never)."""
    settled_intervals: float | None = None

    @property
    def applied(self) -> bool:
        quota_ok = self.container_quota_us == self.to_m * 100
        return quota_ok and not math.isnan(self.status_applied_s) and self.restarts_after == self.restarts_before


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=f"det-yolox-nano={SHARED_MODEL}",
        metavar="NAME=PATH",
        help="the model to serve (default: det-yolox-nano=../shared/data/yolox_nano.onnx)",
    )
    parser.add_argument(
        "--from",
        dest="from_m",
        type=int,
        default=100,
        help="CPU limit at the start, millicores (default: 100: the quota, not the shared host, sets the latency)",
    )
    parser.add_argument(
        "--to", dest="to_m", type=int, default=800, help="CPU limit resized to, millicores (default: 800)"
    )
    parser.add_argument("--no-back", action="store_true", help="do not resize back to --from after the second phase")
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=30.0,
        help="seconds of traffic before, between and after resizes (default: 30)",
    )
    parser.add_argument(
        "--rate", type=float, default=4.0, help="requests per second of the stream, at most one in flight (default: 4)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="the decision interval the settling time is counted in (default: 10, demo's)",
    )
    parser.add_argument("--output", type=Path, default=Path("resize-out"), help="directory of the results")


def parse_model(argument: str) -> tuple[str, Path]:
    name, _, path = argument.partition("=")
    if not name or not path:
        raise ValueError(f"--model takes NAME=PATH, not {argument!r}")
    return name, Path(path)


# -- the analysis (pure: unit-tested) ---------------------------------------------------------------------


def level_ms(requests: list[Request], start_s: float, end_s: float) -> float:
    """Median latency of the answered requests sent in ``[start_s, end_s)`` (NaN if none)."""
    latencies = [r.latency_ms for r in requests if r.ok and start_s <= r.sent_s < end_s]
    return float(np.median(latencies)) if latencies else math.nan


def settling_s(requests: list[Request], at_s: float, before_ms: float, after_ms: float, until_s: float) -> float | None:
    """Seconds from ``at_s`` to the answer at which the stream has moved to the new level for good.

    An answer is at the new level when it is nearer the new level than the old one on a log scale (threshold: their
    geometric mean). The stream has moved for good from the first answer at the new level after which every run of
    :data:`SETTLE_WINDOW` consecutive answers (up to ``until_s``) has its median at the new level: one slow answer
    on a shared machine is noise, a run of them is the old level. A request in flight at ``at_s`` counts (its answer
    can already show the new level). None if the stream never stays at the new level, or the levels are within
    :data:`MIN_LEVEL_RATIO` of each other (nothing to settle to).
    """
    if not (before_ms > 0 and after_ms > 0) or max(before_ms, after_ms) < MIN_LEVEL_RATIO * min(before_ms, after_ms):
        return None
    threshold = math.sqrt(before_ms * after_ms)

    def at_new_level(latency_ms: float) -> bool:
        return latency_ms < threshold if after_ms < before_ms else latency_ms > threshold

    answered = sorted((r for r in requests if r.ok and at_s <= r.answered_s < until_s), key=lambda r: r.answered_s)
    latencies = [r.latency_ms for r in answered]
    windows = range(max(len(latencies) - SETTLE_WINDOW + 1, 1 if latencies else 0))
    first_window: int | None = None
    for start in windows:
        if not at_new_level(float(np.median(latencies[start : start + SETTLE_WINDOW]))):
            first_window = None
        elif first_window is None:
            first_window = start
    if first_window is None:
        return None
    first = next(i for i in range(first_window, len(latencies)) if at_new_level(latencies[i]))
    return answered[first].answered_s - at_s


def analyse(requests: list[Request], events: list[ResizeEvent], phase_s: float, interval_s: float) -> None:
    """Fill each event's levels and settling time: the level before is the phase before the patch, the level after
    the second half of the phase after it (where it has settled, if it settles within a phase)."""
    for event in events:
        start = event.patch_sent_s
        event.level_before_ms = level_ms(requests, start - phase_s, start)
        event.level_after_ms = level_ms(requests, start + phase_s / 2, start + phase_s)
        event.settled_s = settling_s(requests, start, event.level_before_ms, event.level_after_ms, start + phase_s)
        event.settled_intervals = None if event.settled_s is None else event.settled_s / interval_s


def checks(events: list[ResizeEvent], interval_s: float) -> dict[str, bool]:
    """What must hold for every resize: applied in place, latency moved the way the limit did, settled in time."""
    return {
        "applied_in_place": all(event.applied for event in events),
        "latency_follows_limit": all(
            event.level_after_ms * MIN_LEVEL_RATIO <= event.level_before_ms
            if event.to_m > event.from_m
            else event.level_after_ms >= event.level_before_ms * MIN_LEVEL_RATIO
            for event in events
        ),
        "settled_within_two_intervals": all(
            event.settled_s is not None and event.settled_s <= SETTLE_INTERVALS * interval_s for event in events
        ),
    }


# -- the measurement --------------------------------------------------------------------------------------


class Stream:
    """A paced request stream in a thread: one request every ``1/rate`` s, the next one right after a late answer."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str], rate: float, max_seconds: float) -> None:
        self.url, self.body, self.headers = url, body, headers
        self.gap_s = 1.0 / rate
        self.max_seconds = max_seconds
        self.max_requests = math.ceil(rate * max_seconds) + 1
        self.requests: list[Request] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=70)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=60) as session:
            next_send = 0.0
            while not self._stop.is_set() and len(self.requests) < self.max_requests and self.now() < self.max_seconds:
                wait = next_send - self.now()
                if wait > 0 and self._stop.wait(wait):
                    break
                sent = self.now()
                try:
                    ok = session.post(self.url, content=self.body, headers=self.headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.requests.append(Request(round(sent, 4), round(self.now(), 4), ok))
                next_send = max(next_send + self.gap_s, sent)


def millicores(quantity: str) -> int:
    """A CPU quantity as the API writes it ("800m", "1", "1.5") in millicores."""
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


def _pod(stack: RealStack, name: str) -> dict[str, Any]:
    return dict(json.loads(stack.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json")))


def _restarts(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0].get("restartCount", 0))


def pod_quota_us(pod: dict[str, Any]) -> int | None:
    """The pod-level cgroup's CFS quota on the node (the kubelet sets it from the sum of the containers' limits)."""
    root = Path("/sys/fs/cgroup") / "cpu" / f"edgeaigc-{NODE}"
    matches = list(root.rglob(f"pod{pod['metadata']['uid']}/cpu.cfs_quota_us"))
    return int(matches[0].read_text()) if len(matches) == 1 else None


def resize_under_traffic(stack: RealStack, pod: dict[str, Any], stream: Stream, from_m: int, to_m: int) -> ResizeEvent:
    """The operator's in-place resize (``pods/resize``, strategic merge of the inference container's CPU requests and
    limits), timed against the stream: the patch, the pod's status, the container's cgroup."""
    name = pod["metadata"]["name"]
    quota_file = cgroup_file(pod, "cpu", "cpu.cfs_quota_us")
    event = ResizeEvent(from_m, to_m, patch_sent_s=stream.now(), restarts_before=_restarts(pod))
    resources = {"cpu": f"{to_m}m"}
    patch = {"spec": {"containers": [{"name": "inference", "resources": {"requests": resources, "limits": resources}}]}}
    stack.kubectl(
        "patch", "pod", name, "-n", NAMESPACE, "--subresource=resize", "--type=strategic", "-p", json.dumps(patch)
    )
    event.patch_returned_s = stream.now()
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    next_status = 0.0
    while time.monotonic() < deadline and (math.isnan(event.cgroup_applied_s) or math.isnan(event.status_applied_s)):
        if math.isnan(event.cgroup_applied_s) and int(quota_file.read_text()) == to_m * 100:
            event.cgroup_applied_s = stream.now()
        if math.isnan(event.status_applied_s) and time.monotonic() >= next_status:
            next_status = time.monotonic() + STATUS_POLL_S
            status = _pod(stack, name)["status"]["containerStatuses"][0]
            if millicores(status.get("resources", {}).get("limits", {}).get("cpu", "0")) == to_m:
                event.status_applied_s = stream.now()
        time.sleep(CGROUP_POLL_S)
    current = _pod(stack, name)
    status = current["status"]["containerStatuses"][0]
    event.status_resources = status.get("resources", {})
    event.allocated_resources = status.get("allocatedResources", {})
    event.restarts_after = _restarts(current)
    event.container_quota_us = int(quota_file.read_text())
    event.pod_quota_us = pod_quota_us(current)
    sent = event.patch_sent_s
    print(
        f"  resize {from_m}m -> {to_m}m at {sent:.1f} s: patch {event.patch_returned_s - sent:.2f} s, "
        f"cgroup +{event.cgroup_applied_s - sent:.2f} s (quota {event.container_quota_us}, pod "
        f"{event.pod_quota_us}), status +{event.status_applied_s - sent:.2f} s, restarts "
        f"{event.restarts_before} -> {event.restarts_after}",
        flush=True,
    )
    return event


def measure(
    stack: RealStack, name: str, path: Path, url: str, args: argparse.Namespace
) -> tuple[Stream, list[ResizeEvent]]:
    from edgeaigc.inference import protocol

    deployment = replica(
        stack, name, url, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size / 2**20, args.from_m
    )
    stack.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(deployment))

    def ready_pod() -> dict[str, Any] | None:
        pods = stack.pods(f"edgeaigc.io/model={name}")
        return pods[0] if pods and pod_ready(pods[0]) else None

    pod = wait_until(ready_pod, 300, f"the replica of {name} ready on {NODE}")
    feed, _ = example_feed(path)
    encoded = protocol.encode_infer_request(feed, binary_data=True)
    headers = {"Content-Type": encoded.content_type, **encoded.headers}
    url_infer = f"http://{pod['status']['podIP']}:8080/v2/models/{name}/infer"
    targets = [args.to_m] if args.no_back else [args.to_m, args.from_m]
    stream = Stream(url_infer, encoded.body, headers, args.rate, args.phase_seconds * (len(targets) + 1) + 30)
    warm = Stream(url_infer, encoded.body, headers, args.rate, 5.0)  # the first runs allocate: not part of a level
    warm.start()
    time.sleep(5.0)
    warm.stop()
    print(
        f"{name}: {args.rate:g} requests/s at {args.from_m}m, then {' then '.join(f'{m}m' for m in targets)}",
        flush=True,
    )
    stream.start()
    events: list[ResizeEvent] = []
    current = args.from_m
    for target in targets:
        time.sleep(max(0.0, args.phase_seconds * (len(events) + 1) - stream.now()))
        events.append(resize_under_traffic(stack, pod, stream, current, target))
        current = target
    time.sleep(max(0.0, args.phase_seconds * (len(events) + 1) - stream.now()))
    stream.stop()
    return stream, events


def plot(requests: list[Request], events: list[ResizeEvent], interval_s: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4))
    answered = [r for r in requests if r.ok]
    axis.plot(
        [r.answered_s for r in answered],
        [r.latency_ms for r in answered],
        ".",
        markersize=4,
        label="request (at its answer)",
    )
    for index, event in enumerate(events):
        label = index == 0
        axis.axvline(event.patch_sent_s, color="black", linewidth=1, label="resize patch sent" if label else None)
        if not math.isnan(event.cgroup_applied_s):
            axis.axvline(
                event.cgroup_applied_s, color="red", linestyle=":", label="quota in the cgroup" if label else None
            )
        for k in (1, 2):
            interval_label = f"+1, +2 decision intervals ({interval_s:g} s)" if label and k == 1 else None
            axis.axvline(
                event.patch_sent_s + k * interval_s, color="grey", linestyle="--", linewidth=0.6, label=interval_label
            )
        settled = "not settled" if event.settled_s is None else f"settled {event.settled_s:.1f} s"
        axis.annotate(
            f"{event.from_m}m→{event.to_m}m\n{settled}",
            (event.patch_sent_s, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -24),
            textcoords="offset points",
            fontsize=8,
        )
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the stream started")
    axis.set_ylabel("latency (ms)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    try:
        name, path = parse_model(args.model)
    except ValueError as error:
        print(f"edgeaigc bench-resize: {error}", file=sys.stderr)
        return 2
    problems = []
    if not path.is_file():
        problems.append(f"no model file {path}")
    if not (10 <= args.from_m <= 1000 and 10 <= args.to_m <= 1000) or args.from_m == args.to_m:
        problems.append("--from and --to must differ, each 10..1000 millicores (the real node has 1 CPU)")
    if not 2 <= args.phase_seconds <= 600 or not 0 < args.rate <= 50 or args.interval <= 0:
        problems.append("--phase-seconds 2..600, --rate in (0, 50], --interval > 0")
    if problems:
        print(f"edgeaigc bench-resize: {'; '.join(problems)}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    staged = args.output / "artifacts"
    staged.mkdir(exist_ok=True)
    shutil.copyfile(path, staged / f"{name}.onnx")
    load_before = os.getloadavg()
    try:
        with real_cluster(
            [staged / f"{name}.onnx"], namespace=NAMESPACE, workdir=args.output / "cluster", progress=print
        ) as (stack, urls):
            stream, events = measure(stack, name, path, urls[f"{name}.onnx"], args)
    except ClusterError as error:
        print(f"edgeaigc bench-resize: {error}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    analyse(stream.requests, events, args.phase_seconds, args.interval)
    verdict = checks(events, args.interval)
    document = {
        "description": "Latency of a steady request stream to a model pod on the real node while its CPU limit is "
        "resized in place (pods/resize), measured by `edgeaigc bench-resize`; times in seconds since the stream "
        "started.",
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_before_after": [load_before, load_after],
        "model": {"name": name, "file": str(path)},
        "settings": {
            "from_m": args.from_m,
            "to_m": args.to_m,
            "phase_seconds": args.phase_seconds,
            "rate": args.rate,
            "interval_s": args.interval,
            "settle_within_intervals": SETTLE_INTERVALS,
        },
        "resizes": [{**asdict(event), "applied": event.applied} for event in events],
        "checks": verdict,
        "requests": [asdict(request) for request in stream.requests],
    }
    (args.output / "resize.json").write_text(json.dumps(document, indent=2))
    load = "load average {:.1f} {:.1f} {:.1f}".format(*load_after)
    plot(stream.requests, events, args.interval, f"{name}: in-place CPU resize under a {args.rate:g}/s stream ({load})",
         args.output / "resize.png")  # fmt: skip
    answered = sum(r.ok for r in stream.requests)
    print(f"\n{name}: {answered} of {len(stream.requests)} requests answered; {load}")
    for event in events:
        settled = (
            "never" if event.settled_s is None else f"{event.settled_s:.1f} s ({event.settled_intervals:.2f} intervals)"
        )
        print(
            f"  {event.from_m}m -> {event.to_m}m: p50 {event.level_before_ms:.1f} -> {event.level_after_ms:.1f} ms, "
            f"settled after {settled}; quota in the cgroup after {event.cgroup_applied_s - event.patch_sent_s:.2f} s"
        )
    for check, held in verdict.items():
        print(f"  {'ok  ' if held else 'FAIL'} {check}")
    print(f"wrote {args.output / 'resize.json'} and {args.output / 'resize.png'}")
    return 0 if all(verdict.values()) else 1
