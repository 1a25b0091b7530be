"""The demo vehicle-type classifier: a small CNN on 32x64 crops; training set from generated frames; ONNX export.

**Input** ``[N, 3, 32, 64]``: the crop of a detection grown by 10 %, letterboxed at the centre
(so a bus stays long and a motorcycle short: the aspect ratio is the strongest cue once the
crop is resized), RGB scaled to 0-1. **Output** ``[N, C]`` logits (the pipeline applies the
softmax). Six 3x3 convolutions (ReLU, no normalisation layers), two max-pools, an average pool
to a 2x4 map, and two fully connected layers. The batch dimension is dynamic.

**Training crops** come from day and night frames of random training scenes: every vehicle with
enough in view, its box jittered by up to 8 % per edge, and — once the detectors are built — the
boxes the day or night detector finds on the same frames (a detector's boxes have biases of their
own, e.g. a little too wide for a motorcycle, that jitter does not imitate); all cropped by the
pipeline's own code. Classes are weighted by inverse square-root frequency so the rare
types (buses) are not drowned by cars.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeaigc.inference.demo_models.data import (
    VEHICLE_TYPES,
    TrainingFrames,
    crop_canvas,
    is_visible,
    jitter_box,
)
from edgeaigc.inference.demo_models.evaluate import match_detections, truth_arrays
from edgeaigc.inference.pipeline.config import ClassifierConfig
from edgeaigc.inference.pipeline.detect import Detector

OPSET = 17
BOX_JITTER = 0.08


class TinyClassifier(nn.Module):
    """Logits ``[N, C]`` for crops ``[N, 3, 32, 64]`` scaled to 0-1."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, 16),
            *conv(16, 16),
            nn.MaxPool2d(2),
            *conv(16, 32),
            *conv(32, 32),
            nn.MaxPool2d(2),
            *conv(32, 48),
            *conv(48, 48),
            nn.AvgPool2d(4),  # 8x16 -> 2x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(48 * 2 * 4, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def render_crops(
    seed: int,
    frames: int,
    spec: ClassifierConfig,
    first_scene: int,
    stream: int,
    detectors: Mapping[bool, Detector] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Training crops ``[M, H, W, 3]`` uint8 (BGR canvases), their classes ``[M]``, and how many came from detectors.

    Half the frames are day and half night scenes, drawn from two streams of disjoint scene seeds.
    Every vehicle with enough in view gives a crop of its jittered true box; with ``detectors``
    (night -> detector), every detection that matches a vehicle (IoU >= 0.5) gives one more, of
    the detector's box: the classifier then learns the boxes it will be given, biases included.
    """
    rng = np.random.default_rng([seed, stream, 1])
    sources = {
        night: TrainingFrames(seed, night, stream=stream + int(night), first_scene=first_scene + int(night) * 100_000)
        for night in (False, True)
    }
    canvases: list[np.ndarray] = []
    classes: list[int] = []
    from_detectors = 0
    for index in range(frames):
        night = index % 2 == 1
        frame, truths = sources[night].next()
        for truth in truths:
            if not is_visible(truth):
                continue
            box = jitter_box(truth.box, rng, BOX_JITTER)
            canvases.append(crop_canvas(frame, box, spec))
            classes.append(VEHICLE_TYPES.index(truth.vehicle_type))
        if detectors is not None:
            detections = detectors[night].detect_image(frame)
            truth_boxes, truth_classes, truth_ignored = truth_arrays(truths)
            match = match_detections(
                np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4),
                np.array([d.score for d in detections], dtype=np.float64),
                truth_boxes,
                truth_ignored,
            )
            for detection, truth_index in zip(detections, match.matched_truth, strict=True):
                if truth_index >= 0:
                    canvases.append(crop_canvas(frame, detection.box, spec))
                    classes.append(int(truth_classes[truth_index]))
                    from_detectors += 1
        if progress is not None:
            progress(1)
    height, width = spec.input_size
    if not canvases:
        return np.zeros((0, height, width, 3), np.uint8), np.zeros(0, np.int64), 0
    return np.stack(canvases), np.asarray(classes, dtype=np.int64), from_detectors


def class_weights(classes: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse square-root frequency, normalised to mean 1 over the classes present."""
    counts = np.bincount(classes, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
    present = weights > 0
    if present.any():
        weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def export_classifier(classifier: TinyClassifier, input_size: tuple[int, int], path: Path) -> Path:
    """Write the classifier to ``path`` (input ``input`` ``[batch, 3, H, W]``, output ``logits`` ``[batch, C]``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            classifier.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
