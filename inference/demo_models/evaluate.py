"""Held-out evaluation of the demo models, run on the exported ONNX files through the pipeline's own code.

No torch here: the detector runs as :class:`~edgeaigc.inference.pipeline.detect.Detector`, the
classifier as :class:`~edgeaigc.inference.pipeline.classify.Classifier` and the counts come from
a :class:`~edgeaigc.inference.pipeline.traffic.TrafficPipeline`, all with onnxruntime — what is
measured is what is served.

**Detector** — precision and recall at IoU 0.5 at the configured score threshold, and AP50 (area
under the interpolated precision-recall curve). Detections are matched greedily, best score
first, each to the unmatched true box it overlaps most; class-agnostic (the type is the
classifier's job; the detector's own type accuracy on matched boxes is reported beside). A true
vehicle with less than :data:`~.data.MIN_VISIBLE_PX` of its width in view is *ignored*: a
detection on it (IoU >= 0.5, or at least half the detection inside it) is neither a true nor a
false positive, and missing it is no false negative.

**Classifier** — accuracy on the crops of every true box with enough in view (exact boxes, no
jitter), per class and as a confusion matrix; also for the fully visible vehicles alone, and on
the boxes the detector found (matched to a vehicle), which is what it classifies in the pipeline.

**Counts** — the full pipeline (JPEG frames as a camera sends them, detector, classifier,
tracker, vertical counting line through the middle) on a held-out clip, against the generator's
ground truth (:meth:`~edgeaigc.inference.pipeline.scenes.GeneratedClip.crossings`). For reference the same
tracker and line fed with the true boxes (an ideal detector), and the pipeline without the
classifier (types from the detector).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeaigc.inference.demo_models.data import (
    VEHICLE_TYPES,
    classifier_config,
    default_scene,
    detector_config,
    flow_config,
    fully_visible,
    held_out_scene,
    is_visible,
    scene_seed,
)
from edgeaigc.inference.pipeline.backend import LocalRunner
from edgeaigc.inference.pipeline.classify import Classifier
from edgeaigc.inference.pipeline.config import PipelineConfig
from edgeaigc.inference.pipeline.detect import Detection, Detector, box_iou
from edgeaigc.inference.pipeline.flow import FlowAnalyzer
from edgeaigc.inference.pipeline.scenes import GeneratedClip, SceneGenerator, VehicleTruth
from edgeaigc.inference.pipeline.traffic import TrafficPipeline

IOU_THRESHOLD = 0.5
#: Held-out frames are taken every this many frames of a 50-frame scene (10 per scene).
FRAME_STEP = 5
#: Scene indices of the held-out count clips (the evaluation frames use 0, 1, 2, ...).
COUNT_CLIP_INDEX = {False: 900_000, True: 900_001}
#: First scene index of the validation frames (training seeds, beyond every training stream's range).
VALIDATION_INDEX = 950_000
#: Score thresholds the build chooses from (highest F1 on validation frames).
THRESHOLD_CANDIDATES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)
JPEG_QUALITY = 85


# -- metrics (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMatch:
    """How one frame's detections matched its true boxes."""

    true_positive: np.ndarray
    """[N] bool per detection (in the order given)."""
    ignored: np.ndarray
    """[N] bool: the detection lies on an ignored vehicle (neither true nor false positive)."""
    matched_truth: np.ndarray
    """[N] index of the true box a true positive matched, else -1."""
    truths: int
    """True boxes that count (not ignored)."""


def match_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    truth_boxes: np.ndarray,
    truth_ignored: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
) -> FrameMatch:
    """Greedy matching, best score first: each detection takes the unmatched counted true box it overlaps most."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth_boxes = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
    truth_ignored = np.asarray(truth_ignored, dtype=bool).reshape(-1)
    if len(boxes) != len(scores) or len(truth_boxes) != len(truth_ignored):
        raise ValueError("boxes and scores (and true boxes and ignore flags) must have the same length")
    true_positive = np.zeros(len(boxes), dtype=bool)
    ignored = np.zeros(len(boxes), dtype=bool)
    matched_truth = np.full(len(boxes), -1, dtype=np.int64)
    ious = box_iou(boxes, truth_boxes) if len(boxes) and len(truth_boxes) else np.zeros((len(boxes), 0))
    taken = truth_ignored.copy()
    areas = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(axis=1)
    for index in np.argsort(-scores, kind="stable"):
        if ious.shape[1]:
            candidates = np.where(taken, -1.0, ious[index])
            best = int(candidates.argmax())
            if candidates[best] >= iou_threshold:
                true_positive[index], matched_truth[index], taken[best] = True, best, True
                continue
        for truth in np.flatnonzero(truth_ignored):
            top_left = np.maximum(boxes[index, :2], truth_boxes[truth, :2])
            bottom_right = np.minimum(boxes[index, 2:], truth_boxes[truth, 2:])
            inside = float(np.clip(bottom_right - top_left, 0, None).prod()) / max(float(areas[index]), 1e-9)
            if ious[index, truth] >= iou_threshold or inside >= 0.5:
                ignored[index] = True
                break
    return FrameMatch(true_positive, ignored, matched_truth, int((~truth_ignored).sum()))


@dataclass
class DetectionTally:
    """Detections of many frames, to compute precision, recall and AP at any score threshold."""

    scores: list[float] = field(default_factory=list)
    true_positive: list[bool] = field(default_factory=list)
    truths: int = 0
    frames: int = 0
    type_pairs: list[tuple[float, int, int]] = field(default_factory=list)
    """(score, detector class, true class) of each true positive."""

    def add(self, match: FrameMatch, scores: np.ndarray, classes: np.ndarray, truth_classes: np.ndarray) -> None:
        keep = ~match.ignored
        self.scores.extend(float(s) for s in np.asarray(scores)[keep])
        self.true_positive.extend(bool(t) for t in match.true_positive[keep])
        self.truths += match.truths
        for index in np.flatnonzero(match.true_positive):
            self.type_pairs.append(
                (float(scores[index]), int(classes[index]), int(truth_classes[match.matched_truth[index]]))
            )

    def at(self, threshold: float) -> dict[str, float | int]:
        """Precision, recall, F1 and the counts of detections scoring at least ``threshold``."""
        scores = np.asarray(self.scores)
        flags = np.asarray(self.true_positive, dtype=bool)
        kept = scores >= threshold
        tp = int(flags[kept].sum())
        fp = int(kept.sum()) - tp
        fn = self.truths - tp
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / self.truths if self.truths else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}

    def average_precision(self) -> float:
        """Area under the precision-recall curve with precision made monotone (all-points interpolation)."""
        if self.truths == 0:
            return 1.0 if not any(self.true_positive) and not self.scores else 0.0
        order = np.argsort(-np.asarray(self.scores), kind="stable")
        flags = np.asarray(self.true_positive, dtype=np.float64)[order]
        tp = np.cumsum(flags)
        fp = np.cumsum(1.0 - flags)
        recall = np.concatenate([[0.0], tp / self.truths, [1.0]])
        precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1e-9), [0.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.flatnonzero(recall[1:] != recall[:-1])
        return float(((recall[steps + 1] - recall[steps]) * precision[steps + 1]).sum())

    def type_accuracy(self, threshold: float) -> float | None:
        pairs = [(p, t) for score, p, t in self.type_pairs if score >= threshold]
        return sum(p == t for p, t in pairs) / len(pairs) if pairs else None


def classification_report(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class recall ("accuracy" of the class), precision and support, and the confusion matrix.

    ``confusion[i][j]``: crops of true class ``i`` predicted as ``j``.
    """
    y_true, y_pred = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("truth and predicted must have the same length")
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        support = int(confusion[i].sum())
        predicted_as = int(confusion[:, i].sum())
        per_class[label] = {
            "support": support,
            "accuracy": float(confusion[i, i] / support) if support else None,
            "precision": float(confusion[i, i] / predicted_as) if predicted_as else None,
        }
    total = int(confusion.sum())
    return {
        "crops": total,
        "accuracy": float(np.trace(confusion) / total) if total else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def count_error(counted: dict[str, int], truth: dict[str, int]) -> dict[str, Any]:
    """Total and per-type count error of ``counted`` against ``truth``.

    ``relative_error``: |counted - true| / true of the totals; ``type_error``: the per-type absolute
    errors summed, over the true total (a car counted as a van is two errors there, none in the total).
    """
    types = sorted(set(counted) | set(truth))
    true_total, counted_total = sum(truth.values()), sum(counted.values())
    per_type = {t: {"truth": truth.get(t, 0), "counted": counted.get(t, 0)} for t in types}
    type_abs = sum(abs(v["counted"] - v["truth"]) for v in per_type.values())
    return {
        "truth_total": true_total,
        "counted_total": counted_total,
        "abs_error": abs(counted_total - true_total),
        "relative_error": abs(counted_total - true_total) / true_total if true_total else None,
        "type_abs_error_sum": type_abs,
        "type_error": type_abs / true_total if true_total else None,
        "per_type": per_type,
    }


# -- held-out data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutFrame:
    frame: np.ndarray
    truths: list[VehicleTruth]
    scene_seed: int


def held_out_frames(seed: int, night: bool, frames: int) -> Iterator[HeldOutFrame]:
    """``frames`` held-out frames: every :data:`FRAME_STEP`-th frame of default scenes with held-out seeds."""
    return _frames(seed, night, frames, held_out=True, first_index=1 if night else 0)


def validation_frames(seed: int, night: bool, frames: int) -> Iterator[HeldOutFrame]:
    """Like :func:`held_out_frames`, from scenes of training seeds no training stream draws (to pick a threshold)."""
    return _frames(seed, night, frames, held_out=False, first_index=VALIDATION_INDEX + (1 if night else 0))


def _frames(seed: int, night: bool, frames: int, held_out: bool, first_index: int) -> Iterator[HeldOutFrame]:
    produced, index = 0, first_index
    while produced < frames:
        config = default_scene(scene_seed(seed, index, held_out=held_out), night, frames=50)
        generator = SceneGenerator(config)
        for frame_index in range(0, 50, FRAME_STEP):
            if produced == frames:
                break
            frame, truths = generator.render(frame_index)
            yield HeldOutFrame(frame, truths, config.seed)
            produced += 1
        index += 2  # day and night scenes take alternate indices


def truth_arrays(truths: Sequence[VehicleTruth]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([t.box for t in truths], dtype=np.float64).reshape(-1, 4)
    classes = np.array([VEHICLE_TYPES.index(t.vehicle_type) for t in truths], dtype=np.int64)
    ignored = np.array([not is_visible(t) for t in truths], dtype=bool)
    return boxes, classes, ignored


# -- evaluation of the exported models -----------------------------------------------------------


def tally_detector(model: Path, frames: Iterable[HeldOutFrame]) -> DetectionTally:
    """Every detection (score >= 0.01) of the ONNX detector at ``model`` on ``frames``, matched to the truth."""
    config = dataclasses.replace(detector_config(str(model)), score_threshold=0.01)
    detector = Detector(LocalRunner(model), config)
    tally = DetectionTally()
    for item in frames:
        detections = detector.detect_image(item.frame)
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in detections], dtype=np.float64)
        classes = np.array([d.class_id for d in detections], dtype=np.int64)
        truth_boxes, truth_classes, truth_ignored = truth_arrays(item.truths)
        tally.add(match_detections(boxes, scores, truth_boxes, truth_ignored), scores, classes, truth_classes)
        tally.frames += 1
    return tally


def choose_threshold(tally: DetectionTally, candidates: Sequence[float] = THRESHOLD_CANDIDATES) -> float:
    """The candidate score threshold with the highest F1 (the higher threshold on a tie)."""
    best = max(candidates, key=lambda t: (round(float(tally.at(t)["f1"]), 6), t))
    return float(best)


def evaluate_detector(model: Path, frames: Iterable[HeldOutFrame], score_threshold: float) -> dict[str, Any]:
    """Precision/recall at ``score_threshold`` and AP50 of the ONNX detector at ``model`` on ``frames``."""
    tally = tally_detector(model, frames)
    at_threshold = tally.at(score_threshold)
    return {
        "frames": tally.frames,
        "vehicles": tally.truths,
        "score_threshold": score_threshold,
        "iou_threshold": IOU_THRESHOLD,
        **at_threshold,
        "ap50": tally.average_precision(),
        "detector_type_accuracy": tally.type_accuracy(score_threshold),
    }


def evaluate_classifier(
    model: Path,
    frames_by_daypart: Mapping[str, Sequence[HeldOutFrame]],
    detectors: Mapping[str, Detector] | None = None,
) -> dict[str, Any]:
    """Accuracy of the ONNX classifier at ``model`` on the held-out frames' vehicles.

    On the crops of the true boxes (per daypart, ``all``, and ``fully_visible``); with
    ``detectors`` (daypart -> detector) also on the boxes the detector found and matched to a
    vehicle (``on_detections``): what the classifier gets in the pipeline.
    """
    classifier = Classifier(LocalRunner(model), classifier_config(str(model)))
    report: dict[str, Any] = {}
    everything: tuple[list[int], list[int]] = ([], [])
    whole: tuple[list[int], list[int]] = ([], [])
    detected: dict[str, tuple[list[int], list[int]]] = {}
    for daypart, frames in frames_by_daypart.items():
        truth: list[int] = []
        predicted: list[int] = []
        for item in frames:
            visible = [t for t in item.truths if is_visible(t)]
            boxes = [Detection(t.box, 1.0, 0, t.vehicle_type) for t in visible]
            for vehicle, result in zip(visible, classifier.classify(item.frame, boxes), strict=True):
                pair = (VEHICLE_TYPES.index(vehicle.vehicle_type), VEHICLE_TYPES.index(result.label))
                truth.append(pair[0])
                predicted.append(pair[1])
                if fully_visible(vehicle, item.frame.shape[1]):
                    whole[0].append(pair[0])
                    whole[1].append(pair[1])
            if detectors is not None:
                found = detectors[daypart].detect_image(item.frame)
                truth_boxes, truth_classes, truth_ignored = truth_arrays(item.truths)
                match = match_detections(
                    np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4),
                    np.array([d.score for d in found], dtype=np.float64),
                    truth_boxes,
                    truth_ignored,
                )
                pairs = detected.setdefault(daypart, ([], []))
                for index, result in enumerate(classifier.classify(item.frame, found)):
                    if match.matched_truth[index] >= 0:
                        pairs[0].append(int(truth_classes[match.matched_truth[index]]))
                        pairs[1].append(VEHICLE_TYPES.index(result.label))
        everything[0].extend(truth)
        everything[1].extend(predicted)
        report[daypart] = classification_report(truth, predicted, VEHICLE_TYPES)
    report["all"] = classification_report(*everything, VEHICLE_TYPES)
    report["fully_visible"] = classification_report(*whole, VEHICLE_TYPES)
    if detectors is not None:
        on_detections = {daypart: classification_report(*pairs, VEHICLE_TYPES) for daypart, pairs in detected.items()}
        on_detections["all"] = classification_report(
            [t for pairs in detected.values() for t in pairs[0]],
            [p for pairs in detected.values() for p in pairs[1]],
            VEHICLE_TYPES,
        )
        report["on_detections"] = on_detections
    return report


def evaluate_counts(
    detector: Path, classifier: Path | None, seed: int, night: bool, frames: int, score_threshold: float
) -> dict[str, Any]:
    """Counts of the full pipeline on a held-out clip of ``frames`` frames, against the ground truth."""
    scene = held_out_scene(seed, COUNT_CLIP_INDEX[night], night, frames=frames)
    generator = SceneGenerator(scene)
    flow = flow_config(scene)
    detector_spec = dataclasses.replace(detector_config(str(detector)), score_threshold=score_threshold)
    full = TrafficPipeline.local(
        PipelineConfig(
            detector=detector_spec,
            classifier=None if classifier is None else classifier_config(str(classifier)),
            flow=flow,
        )
    )
    detector_only = TrafficPipeline.local(PipelineConfig(detector=detector_spec, flow=flow))
    ideal = FlowAnalyzer(flow)
    truths_per_frame: list[list[VehicleTruth]] = []
    for index in range(frames):
        frame, truths = generator.render(index)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a frame as JPEG")
        data = jpeg.tobytes()
        result = full.process(data, frame_index=index)
        only = detector_only.process(data, frame_index=index)
        ideal_state = ideal.update(
            [Detection(t.box, 1.0, 0, t.vehicle_type) for t in truths], (scene.height, scene.width), index
        )
        truths_per_frame.append(truths)
    # The generator's own ground truth (the frames themselves are not kept).
    truth = GeneratedClip(scene, [], truths_per_frame, (0, 0)).crossings(scene.width / 2)
    return {
        "clip": {
            "scene_seed": scene.seed,
            "night": night,
            "frames": frames,
            "fps": scene.fps,
            "seconds": frames / scene.fps,
            "counting_line": "vertical, x = W/2",
            "jpeg_quality": JPEG_QUALITY,
        },
        "pipeline": count_error(result.flow.counts, truth),
        "detector_types_only": count_error(only.flow.counts, truth),
        "ideal_detector": count_error(ideal_state.counts, truth),
    }
