"""A family of scenarios drawn from a seed: many fleets, catalogues and demands for one actor.

One trained actor should serve fleets and model catalogues it never saw (issue 14). Training
over a *distribution* of worlds needs a generator: :func:`draw_scenario_document` turns a seed
and the ranges of a :class:`FamilyRanges` into a scenario document (the same YAML-shaped
mapping a user writes, validated by :func:`~edgeaigc.policy.scenario.scenario_from_dict`), so a
drawn world is an ordinary scenario that can be written out, read and benchmarked.

What varies, each drawn from the seed (ranges in :class:`FamilyRanges`):

- fleet size and shape: number of edge nodes, one or two node classes (a Pi-like class and a
  gateway class) with their cores, core speed, radio bandwidth, backhaul and round trip;
  cameras per node and frame rates;
- storage: how many "typical" models a node holds (a fraction of the catalogue);
- the model catalogue: its size, the stage mix, model sizes and work per request across orders
  of magnitude (a per-world scale times a per-model spread), input and output sizes;
- prices and the reward's reference scales (set from the world's own miss latency and cost,
  so neither term of the objective is negligible by construction);
- demand: Zipf exponent, rank drift, variant switching, day/night affinity, a daily profile
  (flat, commuter peaks, one peak or a random smooth one), incident bursts, or a count trace
  (a CSV written next to the scenario, one count per slot, with weekday/weekend shapes and
  noise) replacing the profile and bursts.

Seeds: training draws worlds from :data:`TRAINING_SEEDS` and picks its best actor on
:data:`VALIDATION_SEEDS` (below them); held-out families (``families/*.yaml``)
use seeds at or above :data:`HELDOUT_SEED_FLOOR`, and :func:`training_seed` never returns one, so
training cannot see a held-out world.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeaigc.policy.scenario import STAGES, Scenario, ScenarioError, scenario_from_dict

#: Held-out families use seeds at or above this; training never draws one.
HELDOUT_SEED_FLOOR = 1_000_000
#: Training worlds are drawn from these seeds.
TRAINING_SEEDS = range(1000, HELDOUT_SEED_FLOOR)
#: Worlds a training run is evaluated on to pick its best actor: below the training seeds.
VALIDATION_SEEDS: tuple[int, ...] = (1, 2, 3)
#: The bundled held-out family.
HELDOUT_FAMILY = "heldout"
#: Where drawn count traces are written unless told otherwise.
DEFAULT_TRACE_DIR = Path(tempfile.gettempdir()) / "edgeaigc-family-traces"

DAILY_SHAPES: tuple[str, ...] = ("flat", "commuter", "single-peak", "random")


@dataclasses.dataclass(frozen=True)
class FamilyRanges:
    """The ranges worlds are drawn from. ``(low, high)``: uniform, or log-uniform where the
    field's name says ``log``; integers are inclusive."""

    nodes: tuple[int, int] = (2, 8)
    two_node_classes_probability: float = 0.4
    node_cores: tuple[int, int] = (2, 8)
    node_core_speed_log: tuple[float, float] = (0.15, 4.0)
    node_bandwidth_mhz_log: tuple[float, float] = (5.0, 80.0)
    node_backhaul_mbps_log: tuple[float, float] = (5.0, 200.0)
    node_rtt_ms: tuple[float, float] = (20.0, 200.0)
    cameras_per_node: tuple[int, int] = (2, 10)
    camera_fps_log: tuple[float, float] = (0.05, 4.0)
    models: tuple[int, int] = (4, 14)
    models_per_node_storage: tuple[float, float] = (1.5, 5.0)
    """How many catalogue-mean-sized models a node's storage holds."""
    model_size_mb_log: tuple[float, float] = (1.0, 2000.0)
    """Scale of a world's model sizes (each model is 0.4-2.5x the scale)."""
    work_ms_log: tuple[float, float] = (0.5, 1500.0)
    """Scale of a world's work per request at one reference core (per stage 0.2-5x, per model 0.5-2x)."""
    input_kb_log: tuple[float, float] = (1.0, 300.0)
    output_kb_log: tuple[float, float] = (0.1, 400.0)
    cloud_core_speed_log: tuple[float, float] = (1.0, 6.0)
    cloud_price_per_core_second_log: tuple[float, float] = (5e-6, 5e-4)
    price_per_gb_transfer: tuple[float, float] = (0.02, 0.12)
    download_price_per_gb_log: tuple[float, float] = (0.05, 3.0)
    slot_seconds: tuple[float, ...] = (30.0, 60.0, 120.0)
    zipf_exponent: tuple[float, float] = (0.3, 1.5)
    rank_shift_every_slots_log: tuple[float, float] = (8.0, 300.0)
    variant_switch_probability_log: tuple[float, float] = (0.005, 0.25)
    daypart_probability: float = 0.3
    """Chance a model is a day or a night variant."""
    daypart_affinity: tuple[float, float] = (1.0, 5.0)
    burst_probability: tuple[float, float] = (0.0, 0.02)
    burst_multiplier: tuple[float, float] = (1.5, 4.0)
    trace_probability: float = 0.2
    """Chance the demand follows a drawn count trace instead of a daily profile and bursts."""
    reference_scale: tuple[float, float] = (0.5, 2.0)
    """The reward's t_ref and c_ref are the world's nominal miss latency and cost times this."""


@dataclasses.dataclass(frozen=True)
class Family:
    """A named list of seeds with the ranges they are drawn from (a ``families/*.yaml`` file)."""

    name: str
    seeds: tuple[int, ...]
    ranges: FamilyRanges
    episode_slots: int


class _Draw:
    """Small helpers over one seeded generator (every draw of a world comes from it, in order)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 14])

    def uniform(self, limits: tuple[float, float]) -> float:
        return float(self.rng.uniform(limits[0], limits[1]))

    def log_uniform(self, limits: tuple[float, float]) -> float:
        return float(math.exp(self.rng.uniform(math.log(limits[0]), math.log(limits[1]))))

    def integer(self, limits: tuple[int, int]) -> int:
        return int(self.rng.integers(limits[0], limits[1] + 1))

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)


def _daily_profile(draw: _Draw, shape: str) -> list[float]:
    """24 hourly activities with mean 1."""
    hours = np.arange(24)
    if shape == "flat":
        profile = np.ones(24)
    elif shape == "commuter":
        morning, evening = draw.uniform((6.5, 9.0)), draw.uniform((16.0, 19.0))
        width = draw.uniform((1.0, 2.5))
        profile = 0.15 + sum(np.exp(-0.5 * ((hours - peak) / width) ** 2) for peak in (morning, evening))
    elif shape == "single-peak":
        peak, width = draw.uniform((10.0, 16.0)), draw.uniform((2.0, 5.0))
        profile = 0.1 + np.exp(-0.5 * ((hours - peak) / width) ** 2)
    else:
        # A random smooth day: a few harmonics with random phases, kept positive.
        profile = np.ones(24)
        for harmonic in (1, 2, 3):
            profile += (
                draw.uniform((0.0, 0.6)) / harmonic * np.cos(2 * np.pi * harmonic * hours / 24 + draw.uniform((0, 6.3)))
            )
        profile = np.maximum(profile, 0.05)
    profile = profile / profile.mean()
    return [round(float(v), 4) for v in profile]


def _write_trace(draw: _Draw, path: Path, slot_seconds: float, columns: int) -> None:
    """A count CSV with one row per slot over three days (Unix seconds, one column per site).

    Each site has its own commuter or flat weekday shape, a quieter weekend day, day-to-day
    scaling, multiplicative noise and a few incidents; counts are Poisson around that.
    """
    slots = int(3 * 86400 / slot_seconds)
    start = 1_700_000_000 - 1_700_000_000 % 86400  # a midnight (UTC)
    times = start + np.arange(slots) * slot_seconds
    hour = (times % 86400) / 3600.0
    day = ((times - start) // 86400).astype(int)
    table = np.zeros((slots, columns))
    for column in range(columns):
        shape = _daily_profile(draw, "commuter" if draw.chance(0.6) else "random")
        weekday = np.interp(hour, np.arange(25), [*shape, shape[0]])
        weekend = np.interp(hour, np.arange(25), [*_daily_profile(draw, "single-peak"), shape[0]])
        level = np.where(day == 2, 0.6 * weekend, weekday) * draw.rng.uniform(0.8, 1.2, size=3)[day]
        noise = draw.rng.lognormal(0.0, 0.25, size=slots)
        incidents = np.ones(slots)
        for _ in range(draw.integer((0, 3))):
            at, length = draw.integer((0, slots - 1)), draw.integer((3, 30))
            incidents[at : at + length] *= draw.uniform((1.5, 4.0))
        mean_count = draw.log_uniform((5.0, 200.0)) * slot_seconds / 60.0
        table[:, column] = draw.rng.poisson(mean_count * level * noise * incidents)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", *(f"site{c}" for c in range(columns))])
        for t in range(slots):
            writer.writerow([int(times[t]), *(int(v) for v in table[t])])
    temporary.replace(path)  # atomic: parallel draws of the same world never read half a file


def draw_scenario_document(
    seed: int,
    ranges: FamilyRanges | None = None,
    *,
    name: str | None = None,
    episode_slots: int = 240,
    trace_dir: Path | None = None,
) -> dict[str, Any]:
    """The scenario document of world ``seed`` (same seed and ranges: same document).

    Args:
        name: the scenario's name (default ``family-<seed>``).
        trace_dir: where a drawn count trace is written (default :data:`DEFAULT_TRACE_DIR`).
    """
    ranges = ranges or FamilyRanges()
    draw = _Draw(seed)
    name = name or f"family-{seed}"

    # The model catalogue: a stage mix with every stage present, sizes and work per request
    # at a world scale times a per-model spread (orders of magnitude apart between worlds).
    num_models = max(draw.integer(ranges.models), len(STAGES))
    stage_weights = draw.rng.dirichlet(np.ones(len(STAGES)))
    stages = list(range(len(STAGES))) + list(
        draw.rng.choice(len(STAGES), size=num_models - len(STAGES), p=stage_weights)
    )
    size_scale = draw.log_uniform(ranges.model_size_mb_log)
    work_scale = draw.log_uniform(ranges.work_ms_log)
    stage_work = [work_scale * draw.log_uniform((0.2, 5.0)) for _ in STAGES]
    stage_input = [draw.log_uniform(ranges.input_kb_log) for _ in STAGES]
    stage_output = [draw.log_uniform(ranges.output_kb_log) for _ in STAGES]
    models = []
    for index, stage in enumerate(stages):
        daypart = "any"
        if draw.chance(ranges.daypart_probability):
            daypart = "day" if draw.chance(0.5) else "night"
        models.append(
            {
                "name": f"{STAGES[stage][:3]}-{index}",
                "stage": STAGES[stage],
                "daypart": daypart,
                "size_mb": round(size_scale * draw.log_uniform((0.4, 2.5)), 4),
                "work_ms": round(stage_work[stage] * draw.log_uniform((0.5, 2.0)), 5),
                "input_kb": round(stage_input[stage] * draw.log_uniform((0.7, 1.4)), 4),
                "output_kb": round(stage_output[stage] * draw.log_uniform((0.7, 1.4)), 4),
            }
        )
    mean_size = float(np.mean([m["size_mb"] for m in models]))

    # The fleet: one or two node classes.
    num_nodes = draw.integer(ranges.nodes)
    classes = 2 if num_nodes >= 2 and draw.chance(ranges.two_node_classes_probability) else 1
    counts = [num_nodes] if classes == 1 else [num_nodes - num_nodes // 2, num_nodes // 2]
    edge_nodes = []
    for class_index, count in enumerate(counts):
        storage = max(
            mean_size * draw.uniform(ranges.models_per_node_storage), 1.05 * min(m["size_mb"] for m in models)
        )
        edge_nodes.append(
            {
                "name": f"node{class_index}-{{i}}",
                "count": count,
                "storage_mb": round(min(storage, 0.9 * sum(m["size_mb"] for m in models)), 4),
                "cores": draw.integer(ranges.node_cores),
                "core_speed": round(draw.log_uniform(ranges.node_core_speed_log), 4),
                "bandwidth_mhz": round(draw.log_uniform(ranges.node_bandwidth_mhz_log), 3),
                "backhaul_mbps": round(draw.log_uniform(ranges.node_backhaul_mbps_log), 3),
                "rtt_ms": round(draw.uniform(ranges.node_rtt_ms), 2),
                "energy_price_per_core_second": float(f"{draw.log_uniform((1e-8, 1e-5)):.4g}"),
            }
        )

    cloud = {
        "core_speed": round(draw.log_uniform(ranges.cloud_core_speed_log), 4),
        "price_per_core_second": float(f"{draw.log_uniform(ranges.cloud_price_per_core_second_log):.4g}"),
        "price_per_gb_transfer": round(draw.uniform(ranges.price_per_gb_transfer), 4),
        "download_price_per_gb": float(f"{draw.log_uniform(ranges.download_price_per_gb_log):.4g}"),
    }
    # Reward references from the world's nominal miss of a median model (latency and money).
    backhaul = float(np.median([n["backhaul_mbps"] for n in edge_nodes]))
    rtt_s = float(np.median([n["rtt_ms"] for n in edge_nodes])) / 1000
    work_s = float(np.median([m["work_ms"] for m in models])) / 1000
    transfer_mbit = float(np.median([m["input_kb"] + m["output_kb"] for m in models])) * 8 / 1000
    miss_latency = transfer_mbit / backhaul + rtt_s + work_s / cloud["core_speed"]
    miss_cost = (
        work_s / cloud["core_speed"] * cloud["price_per_core_second"]
        + transfer_mbit / 8000 * cloud["price_per_gb_transfer"]
    )
    t_ref = miss_latency * draw.uniform(ranges.reference_scale)
    c_ref = miss_cost * draw.uniform(ranges.reference_scale)

    slot_seconds = float(draw.rng.choice(ranges.slot_seconds))
    demand: dict[str, Any] = {
        "zipf_exponent": round(draw.uniform(ranges.zipf_exponent), 4),
        "rank_shift_every_slots": max(1, round(draw.log_uniform(ranges.rank_shift_every_slots_log))),
        "variant_switch_probability": round(draw.log_uniform(ranges.variant_switch_probability_log), 5),
        "daily_profile": _daily_profile(draw, str(draw.rng.choice(DAILY_SHAPES))),
        "night_hours": [draw.integer((18, 22)), draw.integer((5, 7))],
        "daypart_affinity": round(draw.uniform(ranges.daypart_affinity), 4),
        "burst_probability": round(draw.uniform(ranges.burst_probability), 5),
        "burst_slots": draw.integer((3, 20)),
        "burst_multiplier": round(draw.uniform(ranges.burst_multiplier), 4),
    }
    num_cameras = num_nodes * draw.integer(ranges.cameras_per_node)
    if draw.chance(ranges.trace_probability):
        trace = (trace_dir or DEFAULT_TRACE_DIR) / f"{name}.csv"
        _write_trace(draw, trace, slot_seconds, columns=draw.integer((1, 4)))
        demand["trace"] = {"path": str(trace), "timestamp_column": "timestamp"}

    fps = draw.log_uniform(ranges.camera_fps_log)
    return {
        "name": name,
        "description": f"drawn world {seed}: {num_nodes} nodes, {num_cameras} cameras, {num_models} models",
        "layout_seed": seed,
        "slot_seconds": slot_seconds,
        "episode_slots": int(episode_slots),
        "slo_s": round(3 * miss_latency, 6),
        "rho_max": 0.95,
        "reward": {
            "alpha": 1.0,
            "beta": 1.0,
            "t_ref_s": float(f"{t_ref:.4g}"),
            "c_ref_per_request": float(f"{c_ref:.4g}"),
        },
        "cloud": cloud,
        "edge_nodes": edge_nodes,
        "cameras": {
            "count": num_cameras,
            "attach": "round-robin" if draw.chance(0.7) else "random",
            "fps": [round(fps * 0.5, 5), round(fps * 1.5, 5)],
            "link": {
                "spectral_efficiency_states": sorted(round(draw.log_uniform((0.3, 8.0)), 3) for _ in range(4)),
                "stay_probability": round(draw.uniform((0.6, 0.97)), 3),
            },
        },
        "stage_requests_per_frame": {
            stage: round(draw.log_uniform(limits), 4)
            for stage, limits in zip(STAGES, ((0.5, 2.0), (0.5, 8.0), (0.05, 1.0)), strict=True)
        },
        "models": models,
        "demand": demand,
    }


def draw_scenario(
    seed: int,
    ranges: FamilyRanges | None = None,
    *,
    name: str | None = None,
    episode_slots: int = 240,
    trace_dir: Path | None = None,
) -> Scenario:
    """World ``seed`` as a :class:`Scenario` (see :func:`draw_scenario_document`)."""
    document = draw_scenario_document(seed, ranges, name=name, episode_slots=episode_slots, trace_dir=trace_dir)
    return scenario_from_dict(document)


def training_seed(rng: np.random.Generator) -> int:
    """A world seed for training: never one of a held-out family's (those are >= HELDOUT_SEED_FLOOR)."""
    return int(rng.integers(TRAINING_SEEDS.start, TRAINING_SEEDS.stop))


def bundled_family_path(name: str) -> Path:
    return Path(str(resources.files("edgeaigc.policy").joinpath("families", f"{name}.yaml")))


def load_family(name_or_path: str | Path) -> Family:
    """A family file (``families/heldout.yaml`` by name, or any path): name, seeds, ranges.

    Raises:
        ScenarioError: missing file, unknown range names, or seeds inside the training range.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = bundled_family_path(str(name_or_path))
    if not path.exists():
        raise ScenarioError(f"family {str(name_or_path)!r} is neither a bundled family ({HELDOUT_FAMILY}) nor a file")
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict) or "seeds" not in document:
        raise ScenarioError(f"{path}: a family file needs 'seeds' (a list, or {{first, count}})")
    seeds_doc = document["seeds"]
    if isinstance(seeds_doc, dict):
        seeds = tuple(range(int(seeds_doc["first"]), int(seeds_doc["first"]) + int(seeds_doc["count"])))
    else:
        seeds = tuple(int(s) for s in seeds_doc)
    if not seeds or min(seeds) < HELDOUT_SEED_FLOOR:
        raise ScenarioError(f"{path}: family seeds must be >= {HELDOUT_SEED_FLOOR} (below are training worlds)")
    ranges = _ranges_from(document, str(path))
    return Family(
        name=str(document.get("name", path.stem)),
        seeds=seeds,
        ranges=ranges,
        episode_slots=int(document.get("episode_slots", 240)),
    )


def _ranges_from(document: dict[str, Any], where: str) -> FamilyRanges:
    known = {field.name for field in dataclasses.fields(FamilyRanges)}
    overrides = document.get("ranges", {}) or {}
    if not isinstance(overrides, dict):
        raise ScenarioError(f"{where}: 'ranges' must be a mapping of FamilyRanges fields")
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown ranges {unknown} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return FamilyRanges(**values)


def load_family_ranges(name_or_path: str | Path) -> FamilyRanges:
    """The ranges training draws worlds from: ``default`` or a YAML file with ``ranges:``.

    Raises:
        ScenarioError: the file is missing or names unknown ranges.
    """
    if str(name_or_path) == "default":
        return FamilyRanges()
    path = Path(name_or_path)
    if not path.exists():
        raise ScenarioError(f"family {str(name_or_path)!r} is neither 'default' nor an existing file")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping")
    return _ranges_from(document, str(path))


def family_scenarios(family: Family, trace_dir: Path | None = None) -> list[Scenario]:
    """Every world of a family, named ``<family>-<seed>``."""
    return [
        draw_scenario(
            seed, family.ranges, name=f"{family.name}-{seed}", episode_slots=family.episode_slots, trace_dir=trace_dir
        )
        for seed in family.seeds
    ]


def write_scenario(document: dict[str, Any], path: Path) -> None:
    """Write a drawn document as scenario YAML (``edgeaigc benchmark --scenario PATH`` reads it)."""
    path.write_text(yaml.safe_dump(document, sort_keys=False))
