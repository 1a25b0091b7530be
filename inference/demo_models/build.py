"""``edgeaigc build-demo-models``: render training data, train, export and evaluate the demo models.

Writes a model repository that ``edgeaigc serve --model-repository DIR`` serves::

    DIR/
      det-demo-day/model.onnx     vehicle detector for day scenes   [B, 3, 192, 320] -> [B, 960, 10]
      det-demo-day/config.yaml    sha256 of model.onnx
      det-demo-night/...          the same for night scenes
      cls-demo/model.onnx         vehicle-type classifier on crops  [B, 3, 32, 64] -> [B, 5]
      cls-demo/config.yaml
      pipeline-day.yaml           pipeline configuration (edgeaigc camera --pipeline-config) with the day
      pipeline-night.yaml         or night detector, the classifier and a counting line for generated scenes
      report.json                 training figures and the held-out evaluation

Each model trains for a fixed number of steps (deterministic given ``--seed``, see
:mod:`.training`), capped at ``--minutes`` of wall-clock time. The score threshold of each
detector is the one with the best F1 on validation frames (training seeds); the evaluation uses
held-out scenes (odd seeds, never trained on): see :mod:`.evaluate` for what is measured.
Exit codes: 0 built, 2 bad usage or torch missing, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from edgeaigc.inference.demo_models.data import (
    CLASSIFIER_INPUT,
    CLASSIFIER_NAME,
    DETECTOR_INPUT,
    DETECTOR_NAMES,
    MIN_VISIBLE_PX,
    VEHICLE_TYPES,
    classifier_config,
    default_scene,
    detector_config,
    flow_config,
)

DEFAULT_OUTPUT = "demo-models"
DEFAULT_MINUTES = 9.0
DEFAULT_DETECTOR_STEPS = 1500
DEFAULT_CLASSIFIER_STEPS = 800
DEFAULT_CLASSIFIER_FRAMES = 1200
DEFAULT_EVAL_FRAMES = 200
DEFAULT_VALIDATION_FRAMES = 60
DEFAULT_COUNT_FRAMES = 300
METADATA_KEY = "edgeaigc.demo_model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, metavar="DIR", help=f"model repository to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of everything: scenes, weights, sampling (default: 0)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        metavar="M",
        help="wall-clock cap on each model's training (rendering its data included); a model whose pace says it "
        "will not finish its steps in time anneals by the clock and stops at the cap, and its run is no longer "
        f"reproducible (default: {DEFAULT_MINUTES})",
    )
    parser.add_argument(
        "--detector-steps",
        type=int,
        default=DEFAULT_DETECTOR_STEPS,
        metavar="N",
        help=f"training steps of each detector, 16 frames each (default: {DEFAULT_DETECTOR_STEPS})",
    )
    parser.add_argument(
        "--classifier-steps",
        type=int,
        default=DEFAULT_CLASSIFIER_STEPS,
        metavar="N",
        help=f"training steps of the classifier, 128 crops each (default: {DEFAULT_CLASSIFIER_STEPS})",
    )
    parser.add_argument(
        "--classifier-frames",
        type=int,
        default=DEFAULT_CLASSIFIER_FRAMES,
        metavar="N",
        help=f"frames rendered for the classifier's training crops (default: {DEFAULT_CLASSIFIER_FRAMES})",
    )
    parser.add_argument(
        "--eval-frames",
        type=int,
        default=DEFAULT_EVAL_FRAMES,
        metavar="N",
        help=f"held-out frames per daypart for precision/recall and accuracy (default: {DEFAULT_EVAL_FRAMES})",
    )
    parser.add_argument(
        "--validation-frames",
        type=int,
        default=DEFAULT_VALIDATION_FRAMES,
        metavar="N",
        help=f"validation frames per detector to choose its score threshold (default: {DEFAULT_VALIDATION_FRAMES})",
    )
    parser.add_argument(
        "--count-frames",
        type=int,
        default=DEFAULT_COUNT_FRAMES,
        metavar="N",
        help=f"frames of each held-out count clip at 5 frames/s (default: {DEFAULT_COUNT_FRAMES}, one minute)",
    )
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="torch threads (default: 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.seed < 0:
        return "--seed must be >= 0"
    if not args.minutes > 0:
        return "--minutes must be positive"
    for name in ("detector_steps", "classifier_steps", "classifier_frames", "eval_frames", "count_frames", "threads"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if args.validation_frames < 0:
        return "--validation-frames must be >= 0"
    if Path(args.output).exists() and not Path(args.output).is_dir():
        return f"--output {args.output} exists and is not a directory"
    return None


def run(args: argparse.Namespace) -> int:
    error = _usage_error(args)
    if error is not None:
        print(f"edgeaigc build-demo-models: {error}", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print(
            "edgeaigc build-demo-models: needs torch and onnx (pip install 'edgeaigc[train]'); "
            "the built models then run without them",
            file=sys.stderr,
        )
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        report = build(args)
    finally:  # leave the process as it was (the tests build in-process)
        torch.set_num_threads(threads)
    output = Path(args.output)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"\nwrote {output}/ (serve it: edgeaigc serve --model-repository {output}); report: {output}/report.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeaigc.inference.demo_models.build``, the same as ``edgeaigc build-demo-models``."""
    from edgeaigc.cli.main import run_subcommand

    return run_subcommand("build-demo-models", argv)


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Train, export and evaluate every demo model; the report document."""
    import onnx
    import torch

    from edgeaigc.inference.demo_models import classifier as cls
    from edgeaigc.inference.demo_models import detector as det
    from edgeaigc.inference.demo_models import evaluate as ev
    from edgeaigc.inference.demo_models import training
    from edgeaigc.inference.pipeline.backend import LocalRunner
    from edgeaigc.inference.pipeline.detect import Detector

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    budget_s = args.minutes * 60.0
    progress = not args.no_progress
    started = time.perf_counter()
    models: dict[str, Any] = {}
    thresholds: dict[str, float] = {}

    for daypart, name in DETECTOR_NAMES.items():
        model, result = training.train_detector(
            args.seed, daypart == "night", args.detector_steps, budget_s, progress=progress
        )
        path = det.export_detector(model, DETECTOR_INPUT, output / name / "model.onnx")
        metadata = {
            "kind": "detector",
            "daypart": daypart,
            "output_layout": "yolov5",
            "input": f"images [batch, 3, {DETECTOR_INPUT[0]}, {DETECTOR_INPUT[1]}] BGR / 255, letterbox top-left 114",
            "output": f"output [batch, cells, {5 + len(VEHICLE_TYPES)}]: cx, cy, w, h (input px), objectness, "
            "class probabilities",
            "classes": list(VEHICLE_TYPES),
            "seed": args.seed,
            "steps": result.steps_done,
        }
        _add_metadata(onnx, path, metadata)
        if args.validation_frames:
            tally = ev.tally_detector(path, ev.validation_frames(args.seed, daypart == "night", args.validation_frames))
            thresholds[name] = ev.choose_threshold(tally)
        else:
            thresholds[name] = detector_config(name).score_threshold
        models[name] = _model_entry(path, model, result, metadata)
        models[name]["score_threshold"] = thresholds[name]

    detectors = {
        daypart == "night": Detector(LocalRunner(output / name / "model.onnx"), detector_config(name, thresholds[name]))
        for daypart, name in DETECTOR_NAMES.items()
    }
    classifier, result = training.train_classifier(
        args.seed, args.classifier_frames, args.classifier_steps, budget_s, progress=progress, detectors=detectors
    )
    path = cls.export_classifier(classifier, CLASSIFIER_INPUT, output / CLASSIFIER_NAME / "model.onnx")
    metadata = {
        "kind": "classifier",
        "input": f"input [batch, 3, {CLASSIFIER_INPUT[0]}, {CLASSIFIER_INPUT[1]}] RGB / 255, crop + 10 %, "
        "letterbox centre 0",
        "output": f"logits [batch, {len(VEHICLE_TYPES)}]",
        "labels": list(VEHICLE_TYPES),
        "seed": args.seed,
        "steps": result.steps_done,
    }
    _add_metadata(onnx, path, metadata)
    models[CLASSIFIER_NAME] = _model_entry(path, classifier, result, metadata)

    for daypart, name in DETECTOR_NAMES.items():
        _write_pipeline_config(output / f"pipeline-{daypart}.yaml", name, thresholds[name])

    evaluation_started = time.perf_counter()
    frames = {
        daypart: list(ev.held_out_frames(args.seed, daypart == "night", args.eval_frames)) for daypart in DETECTOR_NAMES
    }
    held_out: dict[str, Any] = {
        "data": (
            f"scenes with held-out (odd) seeds derived from --seed {args.seed}, never trained on; the generator's "
            f"default scene (640x360, 4 lanes, 8 px/m, 60 vehicles per lane and minute, grain 4); vehicles with "
            f"less than {MIN_VISIBLE_PX:g} px of their width in view are ignored"
        ),
        "detector": {},
        "counts": {},
    }
    for daypart, name in DETECTOR_NAMES.items():
        held_out["detector"][name] = ev.evaluate_detector(
            output / name / "model.onnx", frames[daypart], thresholds[name]
        )
    held_out["classifier"] = ev.evaluate_classifier(
        output / CLASSIFIER_NAME / "model.onnx",
        frames,
        {daypart: detectors[daypart == "night"] for daypart in DETECTOR_NAMES},
    )
    for daypart, name in DETECTOR_NAMES.items():
        held_out["counts"][daypart] = ev.evaluate_counts(
            output / name / "model.onnx",
            output / CLASSIFIER_NAME / "model.onnx",
            args.seed,
            daypart == "night",
            args.count_frames,
            thresholds[name],
        )
    held_out["seconds"] = round(time.perf_counter() - evaluation_started, 1)

    import onnxruntime

    return {
        "format": "edgeaigc-demo-models/1",
        "seed": args.seed,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {
            "minutes_cap_per_model": args.minutes,
            "detector_steps": args.detector_steps,
            "classifier_steps": args.classifier_steps,
            "classifier_frames": args.classifier_frames,
            "eval_frames_per_daypart": args.eval_frames,
            "validation_frames": args.validation_frames,
            "count_frames": args.count_frames,
            "threads": args.threads,
        },
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "deterministic": not any(entry["training"]["time_limited"] for entry in models.values()),
        "models": models,
        "held_out": held_out,
    }


def _add_metadata(onnx: Any, path: Path, metadata: dict[str, Any]) -> None:
    """Describe the model inside the ONNX file (``metadata_props``), then write its config.yaml with the digest."""
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    model.producer_name = "edgeaigc build-demo-models"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / "config.yaml").write_text(
        "# Written by edgeaigc build-demo-models; the server refuses model.onnx if its digest differs.\n"
        + yaml.safe_dump({"sha256": digest, "intra_op_threads": 1}, sort_keys=False)
    )


def _model_entry(path: Path, model: Any, result: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metadata": metadata,
        "training": result.to_dict(),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _write_pipeline_config(path: Path, detector: str, threshold: float) -> None:
    """A pipeline configuration with the models by their names at a server or gateway."""
    document = {
        "detector": _plain(dataclasses.asdict(detector_config(detector, threshold))),
        "classifier": _plain(dataclasses.asdict(classifier_config(CLASSIFIER_NAME))),
        "flow": _plain(dataclasses.asdict(flow_config(default_scene(0, False, 1)))),
    }
    header = (
        "# Written by edgeaigc build-demo-models: the demo models by their names at a server or gateway\n"
        "# (replace 'model' by an .onnx path to run in-process). The counting line is vertical through the\n"
        "# middle of a generated scene (edgeaigc camera --generated).\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def format_report(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    models, held = report["models"], report["held_out"]
    lines = [
        f"Demo models, seed {report['seed']}; held-out data: {held['data']}.",
        "",
        f"{'model':<16} {'params':>7} {'size':>8} {'steps':>9} {'train':>8}  held-out",
    ]
    for name, entry in models.items():
        training = entry["training"]
        steps = f"{training['steps_done']}/{training['steps_planned']}" + ("*" if training["time_limited"] else "")
        size = f"{entry['bytes'] / 1024:.0f} KiB"
        head = f"{name:<16} {entry['parameters']:>7} {size:>8} {steps:>9} {training['seconds'] / 60:>6.1f} m"
        if name in held["detector"]:
            d = held["detector"][name]
            lines.append(
                f"{head}  precision {d['precision']:.3f}  recall {d['recall']:.3f}  F1 {d['f1']:.3f}  "
                f"AP50 {d['ap50']:.3f}  ({d['frames']} frames, {d['vehicles']} vehicles, IoU 0.5, "
                f"score >= {d['score_threshold']:g}; TP {d['tp']} FP {d['fp']} FN {d['fn']})"
            )
        else:
            c = held["classifier"]
            on = c["on_detections"]
            lines.append(
                f"{head}  accuracy {_pct(c['all']['accuracy'])} on {c['all']['crops']} true boxes "
                f"(day {_pct(c['day']['accuracy'])}, night {_pct(c['night']['accuracy'])}; "
                f"fully visible {_pct(c['fully_visible']['accuracy'])}); on {on['all']['crops']} detector boxes "
                f"{_pct(on['all']['accuracy'])} (day {_pct(on['day']['accuracy'])}, "
                f"night {_pct(on['night']['accuracy'])})"
            )
    if any(entry["training"]["time_limited"] for entry in models.values()):
        lines.append("* shaped by the --minutes cap (schedule by the clock, or stopped early): not reproducible")
    lines.append("")
    for title, key in (("true boxes", "all"), ("detector boxes", "on_detections")):
        figures = held["classifier"][key] if key == "all" else held["classifier"][key]["all"]
        per_class = "  ".join(
            f"{label} {_pct(v['accuracy'])} (n={v['support']})" for label, v in figures["per_class"].items()
        )
        lines.append(f"classifier per class, {title + ':':<15} {per_class}")
    lines += [
        "",
        "counts on a held-out clip (JPEG frames -> detector -> classifier -> tracker -> line at x = W/2):",
        f"{'clip':<7} {'seconds':>7} {'truth':>6} {'counted':>8} {'error':>8} {'type error':>11}  "
        f"{'ideal detector':>15} {'detector types':>15}",
    ]
    for daypart, counts in held["counts"].items():
        full, ideal, only = counts["pipeline"], counts["ideal_detector"], counts["detector_types_only"]
        lines.append(
            f"{daypart:<7} {counts['clip']['seconds']:>7g} {full['truth_total']:>6} {full['counted_total']:>8} "
            f"{_pct(full['relative_error']):>8} {_pct(full['type_error']):>11}  "
            f"{ideal['counted_total']:>6} ({_pct(ideal['relative_error'])}) {only['counted_total']:>6} "
            f"({_pct(only['type_error'])} t)"
        )
        per_type = "  ".join(f"{t} {v['counted']}/{v['truth']}" for t, v in full["per_type"].items())
        lines.append(f"{'':<7} per type counted/true: {per_type}")
    lines.append(
        "error: |counted - true| / true of the totals; type error: per-type absolute errors summed / true total; "
        "ideal detector: the true boxes through the same tracker; detector types: without the classifier (its type "
        "error)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
