"""The per-camera traffic pipeline: frame -> detection -> classification (optional) -> flow analysis.

One :class:`TrafficPipeline` per camera (it keeps the camera's tracks and counts). The models run
in-process (:meth:`TrafficPipeline.local`) or at a gateway/model server
(:meth:`TrafficPipeline.remote`), which is how a camera sends each stage to its edge gateway.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import numpy as np

from edgeaigc.inference.pipeline.backend import LocalRunner, ModelRunner, RemoteRunner
from edgeaigc.inference.pipeline.classify import Classification, Classifier
from edgeaigc.inference.pipeline.config import PipelineConfig
from edgeaigc.inference.pipeline.detect import Detection, Detector
from edgeaigc.inference.pipeline.flow import FlowAnalyzer, FlowState
from edgeaigc.inference.pipeline.image import decode_frame


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline found in one frame; JSON-serialisable with :meth:`to_dict`."""

    camera: str
    frame_index: int
    detections: list[Detection]
    classifications: list[Classification] | None
    """One per detection when the classifier stage runs, else None."""
    flow: FlowState
    timings_ms: dict[str, float]
    """Wall time of each stage: decode, detect, classify, flow."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrafficPipeline:
    """Detection, classification and flow analysis for one camera."""

    def __init__(
        self,
        config: PipelineConfig,
        detector: ModelRunner,
        classifier: ModelRunner | None = None,
        camera: str = "unknown",
    ) -> None:
        config.validate()
        if (classifier is None) != (config.classifier is None):
            raise ValueError("a classifier runner is needed exactly when the configuration has a classifier")
        self.config = config
        self.camera = camera
        self.detector = Detector(detector, config.detector)
        self.classifier = Classifier(classifier, config.classifier) if classifier and config.classifier else None
        self.flow = FlowAnalyzer(config.flow)
        self._frame_index = -1

    @classmethod
    def local(cls, config: PipelineConfig, camera: str = "unknown", intra_op_threads: int = 1) -> TrafficPipeline:
        """Models in-process: ``config.detector.model`` (and the classifier's) are .onnx paths."""
        classifier = None if config.classifier is None else LocalRunner(config.classifier.model, intra_op_threads)
        return cls(config, LocalRunner(config.detector.model, intra_op_threads), classifier, camera)

    @classmethod
    def remote(
        cls, config: PipelineConfig, url: str, camera: str = "unknown", client: httpx.Client | None = None
    ) -> TrafficPipeline:
        """Models at a gateway or model server: ``config.detector.model`` (and the classifier's) are model names."""
        classifier = None if config.classifier is None else RemoteRunner(url, config.classifier.model, camera, client)
        return cls(config, RemoteRunner(url, config.detector.model, camera, client), classifier, camera)

    def process(
        self, frame: bytes | np.ndarray, frame_index: int | None = None, timestamp_s: float | None = None
    ) -> FrameResult:
        """Run every stage on one frame (JPEG/PNG bytes or an array).

        Raises:
            InvalidInput: the frame is malformed (or a model's output does not fit its configuration).
            RemoteInferenceError: a remote stage did not answer 200.
        """
        timings: dict[str, float] = {}
        started = time.perf_counter()
        image = decode_frame(frame)
        timings["decode"] = _ms_since(started)

        started = time.perf_counter()
        detections = self.detector.detect_image(image)
        timings["detect"] = _ms_since(started)

        classifications = None
        if self.classifier is not None:
            started = time.perf_counter()
            refined = self.classifier.refine(image, detections)
            detections = [detection for detection, _ in refined]
            classifications = [classification for _, classification in refined]
            timings["classify"] = _ms_since(started)

        started = time.perf_counter()
        self._frame_index = self._frame_index + 1 if frame_index is None else frame_index
        state = self.flow.update(detections, (image.shape[0], image.shape[1]), self._frame_index, timestamp_s)
        timings["flow"] = _ms_since(started)
        return FrameResult(self.camera, self._frame_index, detections, classifications, state, timings)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
