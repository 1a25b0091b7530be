"""Procedurally generated traffic scenes: a road seen from the side, vehicles crossing it, ground truth.

Nothing is downloaded: every frame is drawn with OpenCV primitives from a seed. The scene is a
straight road across the frame with ``lanes`` lanes (the upper half drives left to right, the
lower half right to left), dashed lane markings, verges, and vehicles of several types and
colours that enter off-screen, cross at a constant speed per lane and leave. ``night=True``
darkens the scene and lights headlights and rear lights.

The generator knows everything it draws: each frame comes with the box and type of every
vehicle in view (:class:`VehicleTruth`), and :meth:`GeneratedClip.crossings` says how many
vehicles of each type crossed a vertical line during the clip. Tests use that as ground truth for
the pipeline's counts; the demo models can be trained on it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

#: Vehicle type -> (length, height) in metres, drawn at the scene's pixels per metre.
VEHICLE_SIZES_M: dict[str, tuple[float, float]] = {
    "car": (4.4, 1.5),
    "van": (5.2, 2.2),
    "bus": (11.0, 3.0),
    "truck": (9.0, 3.2),
    "motorcycle": (2.1, 1.3),
}
#: How often each type appears (relative).
VEHICLE_MIX: dict[str, float] = {"car": 0.55, "van": 0.15, "bus": 0.07, "truck": 0.13, "motorcycle": 0.10}
BODY_COLOURS_BGR = (
    (40, 40, 200),
    (200, 80, 30),
    (230, 230, 230),
    (30, 30, 30),
    (60, 160, 60),
    (0, 200, 230),
    (150, 150, 150),
    (120, 60, 140),
)


@dataclass(frozen=True)
class SceneConfig:
    """What to draw; every figure has a default that makes a 10-second clip at 5 frames/s."""

    width: int = 640
    """Frame width in pixels."""
    height: int = 360
    """Frame height in pixels."""
    lanes: int = 4
    """Lanes of the road, an even number: half drive left to right (upper), half right to left."""
    fps: float = 5.0
    """Frames per second of the clip (speeds are in km/h, so this sets the pixels per frame)."""
    frames: int = 50
    """Length of the clip in frames."""
    pixels_per_metre: float = 8.0
    """Scale of the scene: metres_per_pixel of the flow analysis is its inverse."""
    speed_kmh: tuple[float, float] = (40.0, 90.0)
    """Range of lane speeds; each lane drives at one speed drawn from it."""
    vehicles_per_minute: float = 60.0
    """Mean arrivals per lane and minute (fewer when the lane is full)."""
    night: bool = False
    """Dark scene with lit headlights and rear lights."""
    noise: float = 4.0
    """Standard deviation of pixel noise (camera grain)."""
    seed: int = 0
    """Everything random flows from this seed."""
    mix: dict[str, float] = field(default_factory=lambda: dict(VEHICLE_MIX))
    """Vehicle type -> relative frequency."""

    def __post_init__(self) -> None:
        if self.lanes < 2 or self.lanes % 2:
            raise ValueError(f"lanes must be an even number >= 2, got {self.lanes}")
        if self.width < 64 or self.height < 64:
            raise ValueError("the frame must be at least 64x64 pixels")
        if self.fps <= 0 or self.frames < 1:
            raise ValueError("fps must be positive and frames at least 1")
        unknown = set(self.mix) - set(VEHICLE_SIZES_M)
        if unknown:
            raise ValueError(f"unknown vehicle types in mix: {sorted(unknown)} (known: {sorted(VEHICLE_SIZES_M)})")


@dataclass(frozen=True)
class VehicleTruth:
    """One vehicle in one frame: its identity, type and visible box (x1, y1, x2, y2) in pixels."""

    vehicle_id: int
    vehicle_type: str
    box: tuple[float, float, float, float]
    lane: int
    speed_kmh: float


@dataclass(frozen=True)
class _Vehicle:
    vehicle_id: int
    vehicle_type: str
    lane: int
    enter_frame: int
    length_px: float
    height_px: float
    speed_px_per_frame: float  # signed: + left to right
    speed_kmh: float
    colour: tuple[int, int, int]

    def left_edge(self, frame: int, width: int) -> float:
        travelled = (frame - self.enter_frame) * abs(self.speed_px_per_frame)
        if self.speed_px_per_frame > 0:
            return -self.length_px + travelled
        return width - travelled


@dataclass(frozen=True)
class GeneratedClip:
    """Frames (BGR uint8) and, per frame, the vehicles in view."""

    config: SceneConfig
    frames: list[np.ndarray]
    truths: list[list[VehicleTruth]]
    road: tuple[int, int]
    """Top and bottom y of the road surface."""

    def crossings(self, line_x: float) -> dict[str, int]:
        """Vehicles of each type whose box centre crossed the vertical line ``x = line_x`` during the clip."""
        positions: dict[int, list[tuple[float, str]]] = {}
        for truths in self.truths:
            for truth in truths:
                centre = (truth.box[0] + truth.box[2]) / 2
                positions.setdefault(truth.vehicle_id, []).append((centre, truth.vehicle_type))
        counts: dict[str, int] = {}
        for track in positions.values():
            xs = [x for x, _ in track]
            if any(min(a, b) < line_x <= max(a, b) for a, b in itertools.pairwise(xs)):
                counts[track[0][1]] = counts.get(track[0][1], 0) + 1
        return counts


class SceneGenerator:
    """Draws a clip from a :class:`SceneConfig`; the same config gives the same frames."""

    def __init__(self, config: SceneConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        height = config.height
        self.lane_height = max(int(height * 0.7 / config.lanes), 12)
        self.road_top = (height - self.lane_height * config.lanes) // 2
        self.road_bottom = self.road_top + self.lane_height * config.lanes
        self.lane_speeds_kmh = self.rng.uniform(*config.speed_kmh, size=config.lanes)
        self.vehicles = self._schedule()
        self.background = self._draw_background()

    def _schedule(self) -> list[_Vehicle]:
        """Arrivals per lane, spaced so that no two vehicles of a lane overlap (one speed per lane)."""
        config = self.config
        types = sorted(config.mix)
        weights = np.array([config.mix[t] for t in types], dtype=float)
        weights /= weights.sum()
        vehicles: list[_Vehicle] = []
        next_id = 0
        for lane in range(config.lanes):
            direction = 1.0 if lane < config.lanes // 2 else -1.0
            speed_kmh = float(self.lane_speeds_kmh[lane])
            speed_px = speed_kmh / 3.6 * config.pixels_per_metre / config.fps
            # Start with the road already in use: arrivals from well before frame 0.
            frame = -math.ceil((config.width + 200) / speed_px)
            free_from = frame
            while True:
                gap_frames = self.rng.exponential(config.fps * 60.0 / config.vehicles_per_minute)
                frame = max(round(frame + gap_frames), free_from)
                if frame >= config.frames:
                    break
                vehicle_type = str(self.rng.choice(types, p=weights))
                length_m, height_m = VEHICLE_SIZES_M[vehicle_type]
                scale = float(self.rng.uniform(0.9, 1.1))
                length_px = length_m * config.pixels_per_metre * scale
                height_px = min(height_m * config.pixels_per_metre * scale, self.lane_height * 0.8)
                colour = BODY_COLOURS_BGR[int(self.rng.integers(len(BODY_COLOURS_BGR)))]
                vehicles.append(
                    _Vehicle(
                        next_id,
                        vehicle_type,
                        lane,
                        frame,
                        length_px,
                        height_px,
                        direction * speed_px,
                        speed_kmh,
                        colour,
                    )
                )
                next_id += 1
                # The next vehicle of this lane may enter once this one and a 1.5 s gap are in.
                free_from = frame + math.ceil((length_px + speed_px * config.fps * 1.5) / speed_px)
        return vehicles

    def _draw_background(self) -> np.ndarray:
        config = self.config
        frame = np.empty((config.height, config.width, 3), dtype=np.uint8)
        verge = (40, 90, 50) if not config.night else (15, 25, 18)
        frame[:] = verge
        asphalt = (95, 95, 95) if not config.night else (35, 35, 38)
        cv2.rectangle(frame, (0, self.road_top), (config.width, self.road_bottom), asphalt, thickness=-1)
        line = (235, 235, 235) if not config.night else (120, 120, 120)
        cv2.line(frame, (0, self.road_top), (config.width, self.road_top), line, 2)
        cv2.line(frame, (0, self.road_bottom), (config.width, self.road_bottom), line, 2)
        middle = self.road_top + self.lane_height * (config.lanes // 2)
        cv2.line(frame, (0, middle - 2), (config.width, middle - 2), (0, 200, 230), 1)
        cv2.line(frame, (0, middle + 2), (config.width, middle + 2), (0, 200, 230), 1)
        for lane in range(1, config.lanes):
            if lane == config.lanes // 2:
                continue
            y = self.road_top + lane * self.lane_height
            for x in range(0, config.width, 40):
                cv2.line(frame, (x, y), (x + 20, y), line, 1)
        return frame

    def _draw_vehicle(self, frame: np.ndarray, vehicle: _Vehicle, x1: float) -> tuple[float, float, float, float]:
        config = self.config
        lane_centre = self.road_top + (vehicle.lane + 0.5) * self.lane_height
        y1 = lane_centre - vehicle.height_px / 2
        x2, y2 = x1 + vehicle.length_px, y1 + vehicle.height_px
        body = vehicle.colour if not config.night else tuple(int(c * 0.35) for c in vehicle.colour)
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(frame, p1, p2, body, thickness=-1)
        cv2.rectangle(frame, p1, p2, (20, 20, 20), thickness=1)
        heading_right = vehicle.speed_px_per_frame > 0
        length, height = x2 - x1, y2 - y1
        # Windows: a cab at the front for trucks, a row for buses, a glasshouse for cars and vans.
        glass = (200, 170, 120) if not config.night else (60, 50, 40)
        if vehicle.vehicle_type == "bus":
            for i in range(int(length // 14)):
                wx = x1 + 4 + i * 14
                cv2.rectangle(frame, (int(wx), int(y1 + 3)), (int(wx + 9), int(y1 + height * 0.45)), glass, -1)
        elif vehicle.vehicle_type == "truck":
            cab = length * 0.22
            cx1 = x2 - cab if heading_right else x1
            cv2.rectangle(frame, (int(cx1), int(y1)), (int(cx1 + cab), int(y2)), (50, 50, 160), -1)
            wx1 = cx1 + cab * (0.45 if heading_right else 0.1)
            cv2.rectangle(frame, (int(wx1), int(y1 + 3)), (int(wx1 + cab * 0.45), int(y1 + height * 0.4)), glass, -1)
        elif vehicle.vehicle_type != "motorcycle":
            cv2.rectangle(
                frame,
                (int(x1 + length * 0.25), int(y1 + 2)),
                (int(x1 + length * 0.75), int(y1 + height * 0.45)),
                glass,
                -1,
            )
        wheel = max(int(height * 0.18), 2)
        for wx in (x1 + length * 0.18, x2 - length * 0.18):
            cv2.circle(frame, (int(wx), int(y2)), wheel, (10, 10, 10), -1)
        if config.night:
            front_x = x2 if heading_right else x1
            rear_x = x1 if heading_right else x2
            cv2.circle(frame, (int(front_x), int(y1 + height * 0.6)), max(wheel, 3), (200, 255, 255), -1)
            cv2.circle(frame, (int(rear_x), int(y1 + height * 0.6)), max(wheel - 1, 2), (0, 0, 230), -1)
        return (x1, y1, x2, y2)

    def render(self, frame_index: int) -> tuple[np.ndarray, list[VehicleTruth]]:
        """Frame ``frame_index`` and the vehicles visible in it (boxes clipped to the frame)."""
        config = self.config
        frame = self.background.copy()
        truths: list[VehicleTruth] = []
        for vehicle in self.vehicles:
            if vehicle.enter_frame > frame_index:
                continue
            x1 = vehicle.left_edge(frame_index, config.width)
            if x1 >= config.width or x1 + vehicle.length_px <= 0:
                continue
            box = self._draw_vehicle(frame, vehicle, x1)
            clipped = (max(box[0], 0.0), box[1], min(box[2], float(config.width)), box[3])
            truths.append(
                VehicleTruth(vehicle.vehicle_id, vehicle.vehicle_type, clipped, vehicle.lane, vehicle.speed_kmh)
            )
        if config.noise > 0:
            grain = self.rng.standard_normal(size=frame.shape, dtype=np.float32) * np.float32(config.noise)
            frame = np.clip(frame.astype(np.float32) + grain, 0, 255).astype(np.uint8)
        return frame, truths

    def frames(self) -> Iterator[tuple[np.ndarray, list[VehicleTruth]]]:
        for index in range(self.config.frames):
            yield self.render(index)

    def clip(self) -> GeneratedClip:
        frames, truths = [], []
        for frame, truth in self.frames():
            frames.append(frame)
            truths.append(truth)
        return GeneratedClip(self.config, frames, truths, (self.road_top, self.road_bottom))


def generate_clip(config: SceneConfig | None = None, **overrides: object) -> GeneratedClip:
    """A clip for ``config`` (or the default config with ``overrides``)."""
    if config is None:
        config = SceneConfig(**overrides)  # type: ignore[arg-type]
    return SceneGenerator(config).clip()
