"""Multi-object tracking across frames: IoU matching with a centroid fallback, constant-velocity prediction.

At a few frames per second a fast vehicle moves more than its own length between frames, so
the boxes of one vehicle in consecutive frames may not overlap. Each track therefore predicts
its next box from its velocity; a detection is matched to the track whose predicted box it
overlaps most (IoU), or failing that whose predicted centre is closest (within a few box
diagonals: ``max_centroid_distance``, or the wider ``first_match_distance`` for a track seen only
once, whose velocity is still unknown). The assignment is optimal over the whole frame (Hungarian algorithm).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edgeaigc.inference.pipeline.config import FlowConfig
from edgeaigc.inference.pipeline.detect import Detection, box_iou

_INFEASIBLE = 1e6


@dataclass
class Track:
    """One vehicle followed across frames."""

    track_id: int
    box: np.ndarray
    """Last matched box (x1, y1, x2, y2), frame pixels."""
    last_frame: int
    types: Counter[str] = field(default_factory=Counter)
    positions: deque[tuple[int, float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    """(frame index, timestamp s, centre x, centre y) of the matched detections."""
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.float64))
    """Centre motion in pixels per frame (smoothed)."""
    score: float = 0.0

    @property
    def vehicle_type(self) -> str:
        """The type the detections of this track named most often."""
        return self.types.most_common(1)[0][0]

    @property
    def centre(self) -> tuple[float, float]:
        return float((self.box[0] + self.box[2]) / 2), float((self.box[1] + self.box[3]) / 2)

    def predicted_box(self, frame_index: int) -> np.ndarray:
        shift = self.velocity * (frame_index - self.last_frame)
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]])

    def speed_px_per_s(self, window: int) -> float | None:
        """Displacement of the centre over the last ``window`` positions, per second (None with one position)."""
        if len(self.positions) < 2:
            return None
        recent = list(self.positions)[-(window + 1) :]
        (_, t0, x0, y0), (_, t1, x1, y1) = recent[0], recent[-1]
        if t1 <= t0:
            return None
        return float(np.hypot(x1 - x0, y1 - y0) / (t1 - t0))


class Tracker:
    """Follows detections across frames; IDs start at 1 and are never reused."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection], frame_index: int, timestamp_s: float) -> list[Track]:
        """Match this frame's detections; returns the tracks seen in this frame (new ones included)."""
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        matches = self._match(boxes, frame_index)
        seen: list[Track] = []
        matched_detections = set()
        for track_index, detection_index in matches:
            track = self.tracks[track_index]
            detection = detections[detection_index]
            self._advance(track, boxes[detection_index], detection, frame_index, timestamp_s)
            seen.append(track)
            matched_detections.add(detection_index)
        for index, detection in enumerate(detections):
            if index in matched_detections:
                continue
            track = Track(self._next_id, boxes[index].copy(), frame_index, score=detection.score)
            self._next_id += 1
            track.types[detection.vehicle_type] += 1
            cx, cy = track.centre
            track.positions.append((frame_index, timestamp_s, cx, cy))
            self.tracks.append(track)
            seen.append(track)
        self.tracks = [t for t in self.tracks if frame_index - t.last_frame <= self.config.max_missed_frames]
        return seen

    def _match(self, boxes: np.ndarray, frame_index: int) -> list[tuple[int, int]]:
        if not self.tracks or len(boxes) == 0:
            return []
        predicted = np.array([t.predicted_box(frame_index) for t in self.tracks])
        ious = box_iou(predicted, boxes)
        centres_t = (predicted[:, :2] + predicted[:, 2:]) / 2
        centres_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        diagonals = np.hypot(predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1])
        distance = np.linalg.norm(centres_t[:, None, :] - centres_d[None, :, :], axis=2)
        # A track seen once has no velocity yet, so its prediction may lag far behind a fast vehicle.
        gates = np.array(
            [
                self.config.first_match_distance if t.hits == 1 else self.config.max_centroid_distance
                for t in self.tracks
            ]
        )[:, None]
        relative = distance / np.maximum(diagonals[:, None], 1.0) / np.maximum(gates, 1e-9)
        cost = np.full(ious.shape, _INFEASIBLE)
        close = relative <= 1.0
        cost[close] = 1.0 + relative[close]
        overlapping = ious >= self.config.iou_threshold
        cost[overlapping] = 1.0 - ious[overlapping]
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _INFEASIBLE]

    def _advance(
        self, track: Track, box: np.ndarray, detection: Detection, frame_index: int, timestamp_s: float
    ) -> None:
        gap = max(frame_index - track.last_frame, 1)
        old_centre = np.array(track.centre)
        track.box = box.copy()
        new_centre = np.array(track.centre)
        step = (new_centre - old_centre) / gap
        track.velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
        track.last_frame = frame_index
        track.hits += 1
        track.score = detection.score
        track.types[detection.vehicle_type] += 1
        track.positions.append((frame_index, timestamp_s, float(new_centre[0]), float(new_centre[1])))
