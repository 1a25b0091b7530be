"""``edgeaigc camera``: a camera that plays a video file or a generated scene against a gateway.

Each frame is JPEG-encoded (what a camera sends), then run through the traffic pipeline with
its models at the gateway (or a model server: both speak the Open Inference Protocol) — decode,
detection, classification if configured, tracking and flow — and the end-to-end latency of the
frame (JPEG in, flow figures out) is recorded. Frames are sent at ``--fps`` (a video recorded
faster is sampled: every ``round(video_fps / fps)``-th frame, with its own timestamps, so
speeds stay right); a frame that takes longer than its interval delays the next one, which
shows up as an achieved frame rate below the target.

Prints the latency percentiles, achieved frame rate, errors and the flow figures at the end
(``--json``: as one JSON document). Exit codes: 0 all frames answered, 1 any frame failed,
2 bad usage (no such video, bad configuration), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

DEFAULT_DETECTOR = "yolox_nano"
#: ``--every-frame``: how often one frame is sent again after a 429 before it counts as failed.
MAX_RESENDS = 20


class SendPacer:
    """Spaces sends at least 1/fps apart, counted from the previous send.

    Not a fixed schedule: after a slow answer (the first one warms the models) a fixed schedule
    would send the frames it fell behind on in a burst, faster than any camera does.

    **Adapting to the uplink share.** When the gateway says the camera is over its bandwidth share
    (429 with Retry-After), the camera waits as told and sends only a fraction of its frames (the
    others are dropped, so the video keeps pace with the clock), the fraction cut by 1/3 at each
    refusal and grown back by 5 % with each answer: additive-increase/multiplicative-decrease, as
    TCP shares a link. The frames are tensors whose size the JPEG quality does not change, so the
    rate is what adapts.
    """

    MIN_FRACTION = 1 / 16

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._next_send_at = float("-inf")
        self.fraction = 1.0
        """Share of the frames sent (1: every frame)."""
        self._credit = 0.0

    def wait(self) -> float:
        """Sleep until the next frame is due; return its time (perf_counter seconds)."""
        while (delay := self._next_send_at - time.perf_counter()) > 0:
            time.sleep(delay)
        sent_at = time.perf_counter()
        self._next_send_at = sent_at + self.interval
        return sent_at

    def take(self) -> bool:
        """Whether to send the frame now due (False: drop it, the camera is slowed to its share)."""
        self._credit = min(1.0, self._credit + self.fraction)
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            return True
        return False

    def refused(self, retry_after_s: float | None) -> None:
        """The gateway answered 429: send fewer frames, and none before ``retry_after_s``."""
        self.fraction = max(self.MIN_FRACTION, self.fraction * 2 / 3)
        if retry_after_s:
            self._next_send_at = max(self._next_send_at, time.perf_counter() + retry_after_s)

    def answered(self) -> None:
        self.fraction = min(1.0, self.fraction + 0.05)


@dataclass
class CameraReport:
    """What one camera run measured."""

    camera: str
    source: str
    target_fps: float
    frames: int = 0
    errors: int = 0
    throttled: int = 0
    """Frames the gateway refused with 429 (over the camera's bandwidth share): not errors."""
    dropped: int = 0
    """Frames not sent while the camera was slowed to its share."""
    error_messages: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    jpeg_bytes: list[int] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    mean_speed_kmh: float | None = None
    congestion: str | None = None
    detections_per_frame: float = 0.0

    @property
    def achieved_fps(self) -> float:
        """Frames sent per second (first to last send); a slow answer delays the next send."""
        if len(self.send_times) < 2 or self.send_times[-1] <= self.send_times[0]:
            return 0.0
        return (len(self.send_times) - 1) / (self.send_times[-1] - self.send_times[0])

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    def summary(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "source": self.source,
            "frames": self.frames,
            "errors": self.errors,
            "throttled": self.throttled,
            "dropped": self.dropped,
            "error_messages": self.error_messages[:5],
            "target_fps": self.target_fps,
            "achieved_fps": round(self.achieved_fps, 3),
            "latency_ms": {
                "p50": _round(self.percentile(50)),
                "p95": _round(self.percentile(95)),
                "p99": _round(self.percentile(99)),
                "mean": _round(float(np.mean(self.latencies_ms)) if self.latencies_ms else None),
            },
            "mean_jpeg_bytes": int(np.mean(self.jpeg_bytes)) if self.jpeg_bytes else 0,
            "detections_per_frame": round(self.detections_per_frame, 2),
            "counts": self.counts,
            "mean_speed_kmh": _round(self.mean_speed_kmh),
            "congestion": self.congestion,
        }


def _process(pipeline: Any, jpeg: bytes, index: int, timestamp: float, report: CameraReport, resends: int) -> Any:
    """The frame through the pipeline; a 429 (the gateway or a busy replica) is waited out and the same
    frame sent again, up to ``resends`` times (each counted as throttled)."""
    from edgeaigc.inference.pipeline.backend import RemoteInferenceError

    for attempt in range(resends + 1):
        try:
            return pipeline.process(jpeg, frame_index=index, timestamp_s=timestamp)
        except RemoteInferenceError as error:
            if error.status_code != 429 or attempt == resends:
                raise
            report.throttled += 1
            time.sleep(min(error.retry_after_s or 1.0, 10.0))
    raise AssertionError("unreachable")  # the loop returns or raises


def _log_frame(log: TextIO | None, **fields: Any) -> None:
    """One line of ``--frame-log``."""
    if log is not None:
        log.write(json.dumps(fields) + "\n")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", metavar="PATH", help="a video file OpenCV can read")
    source.add_argument("--generated", action="store_true", help="a procedurally generated road scene")
    parser.add_argument("--gateway", required=True, metavar="URL", help="gateway (or model server) base URL")
    parser.add_argument("--camera-id", default="cam-0", help="camera name sent as X-Edgeaigc-Camera (default: cam-0)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second to send (default: 5)")
    parser.add_argument("--frames", type=int, default=50, metavar="N", help="frames to send (default: 50)")
    parser.add_argument(
        "--pipeline-config",
        metavar="PATH",
        help="pipeline configuration (YAML/JSON, see edgeaigc.inference.pipeline.config); "
        "default: the YOLOX-Nano COCO detector, no classifier",
    )
    parser.add_argument(
        "--detector-model", metavar="NAME", help=f"detector model name at the gateway (default: {DEFAULT_DETECTOR})"
    )
    parser.add_argument("--night", action="store_true", help="generated scene at night")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated scene (default: 0)")
    parser.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality of the frames sent (default: 85)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (default: 30)")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="send the bearer token in PATH (this camera's token, as the gateway's --camera-tokens holds it) "
        "(default: none)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="verify an https:// gateway against this CA (default: the system's CAs)",
    )
    parser.add_argument(
        "--client-cert", metavar="PEM", help="client certificate for a gateway that requires mutual TLS"
    )
    parser.add_argument("--client-key", metavar="PEM", help="the private key of --client-cert")
    parser.add_argument("--results", metavar="PATH", help="write every frame's result as JSON lines to PATH")
    parser.add_argument(
        "--frame-log",
        metavar="PATH",
        help="write one JSON line per frame sent: its wall-clock time, whether it was answered, latency or error",
    )
    parser.add_argument(
        "--every-frame",
        action="store_true",
        help="never drop a frame: on 429 wait the Retry-After and send the same frame again (up to "
        f"{MAX_RESENDS} times), so that two runs see the same input (default: drop frames to keep pace, as a "
        "live camera does)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def video_frames(path: str, fps: float, limit: int) -> tuple[Iterator[tuple[int, float, np.ndarray]], float]:
    """Frames of a video sampled at ``fps``: (source index, timestamp s, BGR frame), and the video's fps."""
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path}")
    video_fps = capture.get(cv2.CAP_PROP_FPS) or fps
    step = max(1, round(video_fps / fps))

    def frames() -> Iterator[tuple[int, float, np.ndarray]]:
        index = sent = 0
        try:
            while sent < limit:
                ok, frame = capture.read()
                if not ok:
                    return
                if index % step == 0:
                    yield index, index / video_fps, frame
                    sent += 1
                index += 1
        finally:
            capture.release()

    return frames(), video_fps


def generated_frames(fps: float, limit: int, night: bool, seed: int) -> Iterator[tuple[int, float, np.ndarray]]:
    from edgeaigc.inference.pipeline.scenes import SceneConfig, SceneGenerator

    generator = SceneGenerator(SceneConfig(fps=fps, frames=limit, night=night, seed=seed))
    for index in range(limit):
        frame, _ = generator.render(index)
        yield index, index / fps, frame


def run(args: argparse.Namespace) -> int:
    import cv2
    import httpx
    from tqdm import tqdm

    from edgeaigc.inference.auth import read_token
    from edgeaigc.inference.errors import InvalidInput
    from edgeaigc.inference.pipeline.backend import RemoteInferenceError
    from edgeaigc.inference.pipeline.config import (
        YOLOX_NANO_COCO,
        ConfigError,
        FlowConfig,
        PipelineConfig,
        load_pipeline_config,
    )
    from edgeaigc.inference.pipeline.traffic import TrafficPipeline
    from edgeaigc.inference.tls import client_context

    def usage(message: str) -> int:
        print(f"edgeaigc camera: {message}", file=sys.stderr)
        return 2

    if args.fps <= 0 or args.frames < 1 or not 1 <= args.jpeg_quality <= 100:
        return usage("--fps must be positive, --frames at least 1, --jpeg-quality 1-100")
    try:
        if args.video:
            frames, source_fps = video_frames(args.video, args.fps, args.frames)
        else:
            frames, source_fps = generated_frames(args.fps, args.frames, args.night, args.seed), args.fps
        if args.pipeline_config:
            config = load_pipeline_config(args.pipeline_config)
        else:
            config = PipelineConfig(detector=YOLOX_NANO_COCO, flow=FlowConfig(fps=source_fps))
        if args.detector_model:
            config = dataclasses.replace(
                config, detector=dataclasses.replace(config.detector, model=args.detector_model)
            )
    except (ValueError, OSError, ConfigError) as error:
        return usage(str(error))
    try:
        headers = {"Authorization": f"Bearer {read_token(Path(args.token_file))}"} if args.token_file else {}
    except (OSError, ValueError) as error:
        return usage(f"--token-file: {error}")
    tls = client_context(
        Path(args.ca_file) if args.ca_file else None,
        Path(args.client_cert) if args.client_cert else None,
        Path(args.client_key) if args.client_key else None,
    )
    if isinstance(tls, str):
        return usage(f"--ca-file/--client-cert/--client-key: {tls}")

    source = args.video or ("generated night scene" if args.night else "generated day scene")
    report = CameraReport(args.camera_id, source, args.fps)
    results_file = open(args.results, "w") if args.results else None  # noqa: SIM115 - closed below
    frame_log = open(args.frame_log, "w", buffering=1) if args.frame_log else None  # noqa: SIM115 - closed below
    detections = 0
    with httpx.Client(timeout=args.timeout, headers=headers, verify=tls) as client:
        pipeline = TrafficPipeline.remote(config, args.gateway, args.camera_id, client)
        progress = tqdm(total=args.frames, unit="frame", disable=args.no_progress, file=sys.stderr)
        pacer = SendPacer(args.fps)
        try:
            for index, timestamp, frame in frames:
                _, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])
                jpeg = encoded.tobytes()
                sent_at = pacer.wait()
                if not args.every_frame and not pacer.take():
                    report.dropped += 1
                    progress.update(1)
                    continue
                sent_wall = time.time()
                report.send_times.append(sent_at)
                try:
                    result = _process(pipeline, jpeg, index, timestamp, report, MAX_RESENDS if args.every_frame else 0)
                except (InvalidInput, RemoteInferenceError) as error:
                    if isinstance(error, RemoteInferenceError) and error.status_code == 429 and not args.every_frame:
                        report.throttled += 1
                        pacer.refused(error.retry_after_s)
                        _log_frame(frame_log, frame=index, time=sent_wall, ok=False, throttled=True)
                        report.frames += 1
                        progress.update(1)
                        continue
                    report.errors += 1
                    report.error_messages.append(f"frame {index}: {error}")
                    _log_frame(frame_log, frame=index, time=sent_wall, ok=False, error=str(error))
                else:
                    pacer.answered()
                    latency_ms = (time.perf_counter() - sent_at) * 1000.0
                    report.latencies_ms.append(latency_ms)
                    _log_frame(frame_log, frame=index, time=sent_wall, ok=True, latency_ms=round(latency_ms, 2))
                    detections += len(result.detections)
                    report.counts = result.flow.counts
                    report.mean_speed_kmh = result.flow.mean_speed_kmh
                    report.congestion = result.flow.congestion
                    if results_file is not None:
                        results_file.write(json.dumps(result.to_dict()) + "\n")
                report.frames += 1
                report.jpeg_bytes.append(len(jpeg))
                progress.update(1)
                progress.set_postfix(errors=report.errors, refresh=False)
        finally:
            progress.close()
            for file in (results_file, frame_log):
                if file is not None:
                    file.close()
    answered = report.frames - report.errors
    report.detections_per_frame = detections / answered if answered else 0.0
    summary = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 1 if report.errors or report.frames == 0 else 0


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    lines = [
        f"camera {summary['camera']} ({summary['source']}): {summary['frames']} frames, {summary['errors']} errors",
        f"  achieved {summary['achieved_fps']:.2f} frames/s (target {summary['target_fps']:g})",
        f"  end-to-end latency ms: p50 {latency['p50']}  p95 {latency['p95']}  p99 {latency['p99']}",
        f"  mean JPEG {summary['mean_jpeg_bytes']} bytes, {summary['detections_per_frame']} detections per frame",
        f"  counted {summary['counts'] or 'nothing'}; mean speed {summary['mean_speed_kmh']} km/h; "
        f"congestion {summary['congestion']}",
    ]
    lines.extend(f"  error: {message}" for message in summary["error_messages"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeaigc.inference.pipeline.camera``, the same as ``edgeaigc camera``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("camera", argv)


if __name__ == "__main__":
    sys.exit(main())
