"""Vehicle classification of each detection's crop with any ONNX image classifier (optional stage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeaigc.inference.errors import InvalidInput
from edgeaigc.inference.pipeline.backend import ModelStage
from edgeaigc.inference.pipeline.config import ClassifierConfig
from edgeaigc.inference.pipeline.detect import Detection
from edgeaigc.inference.pipeline.image import crop, letterbox, to_tensor


@dataclass(frozen=True)
class Classification:
    label: str
    confidence: float


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Classifier(ModelStage[ClassifierConfig]):
    """Classifies the crops of detections and refines their vehicle type."""

    role = "classifier"

    def classify(self, image: np.ndarray, detections: Sequence[Detection]) -> list[Classification]:
        """One classification per detection (same order)."""
        if not detections:
            return []
        canvases = [letterbox(crop(image, d.box, self.config.crop_padding), self.config)[0] for d in detections]
        if self.config.batch:
            scores = self._scores(canvases)
        else:
            scores = np.concatenate([self._scores([canvas]) for canvas in canvases])
        if scores.shape != (len(detections), len(self.config.labels)):
            raise InvalidInput(
                f"classifier '{self.runner.name}' returned shape {list(scores.shape)}, expected "
                f"[{len(detections)}, {len(self.config.labels)}] (one score per configured label)"
            )
        probabilities = softmax(scores) if self.config.softmax else scores
        best = probabilities.argmax(axis=1)
        return [Classification(self.config.labels[int(i)], float(probabilities[row, i])) for row, i in enumerate(best)]

    def refine(self, image: np.ndarray, detections: Sequence[Detection]) -> list[tuple[Detection, Classification]]:
        """Detections with the classifier's type where it is confident enough, and the classification."""
        refined = []
        for detection, classification in zip(detections, self.classify(image, detections), strict=True):
            if classification.confidence >= self.config.min_confidence:
                detection = replace(detection, vehicle_type=classification.label)
            refined.append((detection, classification))
        return refined

    def _scores(self, canvases: list[np.ndarray]) -> np.ndarray:
        outputs = self.runner.run({self.input_name(): to_tensor(canvases, self.config)})
        name = self.config.output_name or next(iter(outputs))
        if name not in outputs:
            raise InvalidInput(f"classifier '{self.runner.name}' has no output '{name}' (it has {sorted(outputs)})")
        scores = np.asarray(outputs[name], dtype=np.float32)
        return scores.reshape(scores.shape[0], -1) if scores.ndim > 2 else scores
