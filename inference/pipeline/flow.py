"""Traffic-flow analysis of one camera: counts across a line, speeds, occupancy, congestion level.

:class:`FlowAnalyzer` keeps the camera's state (a :class:`~edgeaigc.inference.pipeline.track.Tracker`
and the counts so far) and turns each frame's detections into a :class:`FlowState`:

- **counts**: a confirmed track (``min_hits`` detections) whose centre crossed the counting line
  between two of its positions is counted once, under its vehicle type (the type its detections
  named most often);
- **speed**: a track's centre displacement over its last few positions, per second, times
  ``metres_per_pixel`` — km/h;
- **occupancy**: the share of the region's pixels covered by this frame's boxes;
- **congestion**: the worse of the level from the mean speed and the level from occupancy,
  both averaged over the last ``window_frames`` frames (no vehicle in view is free flow).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from edgeaigc.inference.pipeline.config import CONGESTION_LEVELS, FlowConfig
from edgeaigc.inference.pipeline.detect import Detection
from edgeaigc.inference.pipeline.track import Track, Tracker

#: Occupancy masks are drawn at most this many pixels wide (enough for a share to 0.1 %).
_MASK_WIDTH = 320


@dataclass(frozen=True)
class TrackState:
    track_id: int
    vehicle_type: str
    box: tuple[float, float, float, float]
    speed_kmh: float | None
    counted: bool


@dataclass(frozen=True)
class FlowState:
    """The flow figures after one frame; JSON-serialisable with :meth:`to_dict`."""

    frame_index: int
    timestamp_s: float
    vehicles_in_view: int
    tracks: list[TrackState]
    counts: dict[str, int]
    """Vehicles that crossed the counting line so far, per type."""
    total_count: int
    new_crossings: list[int]
    """Track IDs counted in this frame."""
    mean_speed_kmh: float | None
    """Mean speed of the confirmed tracks in view (None when none has a speed yet)."""
    occupancy: float
    """Share of the region covered by vehicle boxes in this frame, 0-1."""
    congestion: str
    """free, moderate, heavy or jam (from speed and occupancy over the last frames)."""
    flow_per_minute: float
    """Vehicles counted per minute since the first frame."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _orient(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def crosses(p0: tuple[float, float], p1: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> int:
    """+1 or -1 (the side it ends on) if the move p0 -> p1 crosses the segment a-b, else 0.

    A point on the line counts as being on its positive side, so touching the line and going
    back is no crossing, and a move that ends exactly on the line is one.
    """
    start_positive, end_positive = _orient(a, b, p0) >= 0, _orient(a, b, p1) >= 0
    if start_positive == end_positive:
        return 0
    t_a, t_b = _orient(p0, p1, a), _orient(p0, p1, b)
    if (t_a > 0 and t_b > 0) or (t_a < 0 and t_b < 0):
        return 0  # crosses the line through a and b, but beyond the segment
    return 1 if end_positive else -1


class FlowAnalyzer:
    """Counts, speeds, occupancy and congestion for one camera, frame after frame."""

    def __init__(self, config: FlowConfig) -> None:
        config.validate()
        self.config = config
        self.tracker = Tracker(config)
        self.counts: dict[str, int] = {}
        self._counted: set[int] = set()
        self._crossed: set[int] = set()
        self._frame_index = -1
        self._first_timestamp: float | None = None
        self._speeds: deque[float | None] = deque(maxlen=config.window_frames)
        self._occupancies: deque[float] = deque(maxlen=config.window_frames)
        self._region_cache: tuple[tuple[int, int], np.ndarray, float] | None = None

    def update(
        self,
        detections: Sequence[Detection],
        frame_size: tuple[int, int],
        frame_index: int | None = None,
        timestamp_s: float | None = None,
    ) -> FlowState:
        """Fold in one frame's detections.

        Args:
            detections: vehicles in the frame (frame pixels).
            frame_size: (height, width) of the frame.
            frame_index: position of the frame in the stream (default: the next one).
            timestamp_s: capture time (default: ``frame_index / fps``).
        """
        frame_index = self._frame_index + 1 if frame_index is None else frame_index
        self._frame_index = frame_index
        timestamp_s = frame_index / self.config.fps if timestamp_s is None else timestamp_s
        if self._first_timestamp is None:
            self._first_timestamp = timestamp_s
        height, width = frame_size
        (ax, ay), (bx, by) = self.config.counting_line
        line = ((ax * width, ay * height), (bx * width, by * height))

        seen = self.tracker.update(detections, frame_index, timestamp_s)
        new_crossings: list[int] = []
        states: list[TrackState] = []
        speeds: list[float] = []
        for track in seen:
            if len(track.positions) >= 2:
                (_, _, x0, y0), (_, _, x1, y1) = track.positions[-2], track.positions[-1]
                if crosses((x0, y0), (x1, y1), *line):
                    self._crossed.add(track.track_id)
            confirmed = track.hits >= self.config.min_hits
            if confirmed and track.track_id in self._crossed and track.track_id not in self._counted:
                self._counted.add(track.track_id)
                self.counts[track.vehicle_type] = self.counts.get(track.vehicle_type, 0) + 1
                new_crossings.append(track.track_id)
            if confirmed:
                speed = self._speed_kmh(track)
                if speed is not None:
                    speeds.append(speed)
                states.append(
                    TrackState(
                        track.track_id,
                        track.vehicle_type,
                        (float(track.box[0]), float(track.box[1]), float(track.box[2]), float(track.box[3])),
                        speed,
                        track.track_id in self._counted,
                    )
                )
        mean_speed = float(np.mean(speeds)) if speeds else None
        occupancy = self.occupancy(detections, frame_size)
        self._speeds.append(mean_speed)
        self._occupancies.append(occupancy)
        total = sum(self.counts.values())
        elapsed_min = (timestamp_s - self._first_timestamp) / 60.0
        return FlowState(
            frame_index=frame_index,
            timestamp_s=timestamp_s,
            vehicles_in_view=len(detections),
            tracks=states,
            counts=dict(sorted(self.counts.items())),
            total_count=total,
            new_crossings=new_crossings,
            mean_speed_kmh=mean_speed,
            occupancy=occupancy,
            congestion=self.congestion(),
            flow_per_minute=total / elapsed_min if elapsed_min > 0 else 0.0,
        )

    def _speed_kmh(self, track: Track) -> float | None:
        pixels_per_s = track.speed_px_per_s(self.config.speed_window_frames)
        if pixels_per_s is None:
            return None
        return pixels_per_s * self.config.metres_per_pixel * 3.6

    def occupancy(self, detections: Sequence[Detection], frame_size: tuple[int, int]) -> float:
        """Share of the region covered by the union of the boxes."""
        height, width = frame_size
        scale = min(1.0, _MASK_WIDTH / max(width, 1))
        size = (max(round(height * scale), 1), max(round(width * scale), 1))
        if self._region_cache is None or self._region_cache[0] != frame_size:
            region = np.zeros(size, dtype=np.uint8)
            polygon = np.array([[x * size[1], y * size[0]] for x, y in self.config.region], dtype=np.int32)
            cv2.fillPoly(region, [polygon], 1)
            self._region_cache = (frame_size, region.astype(bool), float(region.sum()))
        _, region_mask, region_area = self._region_cache
        if region_area == 0 or not detections:
            return 0.0
        covered = np.zeros(size, dtype=bool)
        for detection in detections:
            x1, y1, x2, y2 = (round(v * scale) for v in detection.box)
            covered[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        return float((covered & region_mask).sum() / region_area)

    def congestion(self) -> str:
        """The level from the mean speed and occupancy over the last ``window_frames`` frames."""
        config = self.config
        occupancy = float(np.mean(self._occupancies)) if self._occupancies else 0.0
        occupancy_level = int(np.searchsorted(np.asarray(config.occupancy_levels), occupancy, side="right"))
        speeds = [s for s in self._speeds if s is not None]
        speed_level = 0
        if speeds:
            speed = float(np.mean(speeds))
            thresholds = (config.free_speed_kmh, config.moderate_speed_kmh, config.heavy_speed_kmh)
            speed_level = next((level for level, low in enumerate(thresholds) if speed >= low), 3)
        return CONGESTION_LEVELS[max(occupancy_level, speed_level)]
