"""Scenario files: the fleet, its models, prices and demand, loaded from YAML into arrays.

A scenario is what the simulator, the benchmark and training agree on. The YAML is written
for people (names, units in the key names, groups with ``count``); :func:`load_scenario`
turns it into a :class:`Scenario` whose fields are numpy arrays indexed by edge node ``e``,
camera ``u`` and model ``m`` as in DESIGN §3.

Groups expand deterministically: a group with ``count: n`` and a name containing ``{i}``
becomes ``n`` entries; a value given as ``[low, high]`` is drawn uniformly per entry from
a generator seeded by the scenario's ``layout_seed``, so a scenario file always means the
same fleet.

An edge node group may name a ``site`` (every node of the group is in it): nodes of one site share
a LAN, and a model newly cached on one of them is fetched from a site neighbour that held it in the
previous slot, at the top-level ``site_lan_mbps`` (default 1000) and without backhaul bytes or
download price (:func:`edgeaigc.policy.system_model.peer_sourced`). A node without a site is a site
of its own, as in every scenario written before sites existed.

Work per request can come from measurements instead of guesses: a top-level
``calibration: PATH`` names a calibration file (relative to the scenario file), as written by
``edgeaigc bench-serving --parts work`` (``policy/calibration/work_ms.json``), and a model whose
``work_ms`` is the word ``calibrated`` takes the file's ``models.<name>.work_ms`` (milliseconds at
one reference core, the unit of ``work_ms`` everywhere). A model may name another entry with
``calibrated_as: <name>`` (a scenario's own model names need not match the file's). Models with
a number keep it, so a scenario can mix measured and assumed figures. A model marked
``calibrated`` that the file lacks, or ``calibrated`` without a ``calibration`` file, is an error
naming the model.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeaigc.policy.crd_defaults import POLICY_DEFAULTS

STAGES: tuple[str, ...] = ("detection", "classification", "flow")
DAYPARTS: tuple[str, ...] = ("any", "day", "night")
BUNDLED_SCENARIOS: tuple[str, ...] = (
    "paper",
    "traffic-city",
    "traffic-city-calibrated",
    "traffic-city-sites",
    "large",
    "tiny",
)
#: LAN rate between two edge nodes of one site when a scenario names none (Mbit/s; 1 Gbit Ethernet).
DEFAULT_SITE_LAN_MBPS = 1000.0


class ScenarioError(ValueError):
    """A scenario file is missing, malformed or inconsistent; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """Reward ``-(alpha * mean_rt / t_ref_s + beta * cost_per_request / c_ref_per_request)``."""

    alpha: float
    beta: float
    t_ref_s: float
    c_ref_per_request: float


@dataclasses.dataclass(frozen=True)
class DemandConfig:
    """How request rates are generated (synthetic) or read (trace)."""

    zipf_exponent: float
    """Skew of variant popularity within a stage (rank r gets weight r**-s)."""
    rank_shift_every_slots: int
    """Mean number of slots between two popularity rank swaps within a stage."""
    variant_switch_probability: float
    """Per slot, chance that a camera re-draws the variant it uses for a stage."""
    daily_profile: tuple[float, ...]
    """Traffic activity per hour of day (24 values, mean about 1)."""
    night_hours: tuple[int, int]
    """[start, end) hours when night variants are preferred."""
    daypart_affinity: float
    """Popularity multiplier of a variant in its own daypart (and divisor outside it)."""
    burst_probability: float
    """Per camera and slot, chance an incident burst starts."""
    burst_slots: int
    """Mean burst length in slots."""
    burst_multiplier: float
    """Frame-rate multiplier during a burst."""
    trace_path: Path | None
    """CSV of real counts replacing the daily profile and bursts (see :mod:`.demand`)."""
    trace_timestamp_column: str
    trace_count_columns: tuple[str, ...]
    """Empty means every column except the timestamp."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A fleet, its models and its demand, as arrays (DESIGN §3 notation in comments)."""

    name: str
    description: str
    slot_seconds: float
    episode_slots: int
    slo_s: float
    rho_max: float
    """Utilisation beyond which a queue's delay grows linearly (keeps overload finite)."""
    request_overhead_s: float
    """Fixed time of every request besides its model's work (HTTP, relay, tensor decoding): measured on
    the real system, where a tiny model's request takes ~15 ms whatever its CPU (docs/calibration.md)."""
    reward: RewardWeights
    demand: DemandConfig
    # cloud c
    cloud_core_speed: float
    cloud_price_per_core_second: float
    price_per_gb_transfer: float
    download_price_per_gb: float
    # edge nodes e
    node_names: tuple[str, ...]
    node_storage_mb: np.ndarray  # S_e
    node_cores: np.ndarray
    node_core_speed: np.ndarray  # relative to the reference core
    node_bandwidth_mhz: np.ndarray  # B_e
    node_backhaul_mbps: np.ndarray  # R_e
    node_rtt_s: np.ndarray  # RTT_e
    node_energy_price_per_core_second: np.ndarray
    node_site: np.ndarray
    """Index of each node's site: nodes of one site share a LAN, so a model newly cached on one is
    fetched from a site neighbour that held it in the previous slot instead of over the backhaul.
    A node without a ``site`` in its file is a site of its own (no peers: the backhaul as before)."""
    site_lan_mbps: float
    """Rate of a peer download inside a site (Mbit/s); a peer download costs no backhaul bytes."""
    # cameras u
    camera_names: tuple[str, ...]
    camera_node: np.ndarray  # index e of the node each camera is attached to
    camera_fps: np.ndarray
    link_states: np.ndarray  # spectral efficiencies q (bit/s/Hz) of the link Markov chain
    link_stay_probability: float
    # models m
    model_names: tuple[str, ...]
    model_stage: np.ndarray  # index into STAGES
    model_daypart: np.ndarray  # index into DAYPARTS
    model_size_mb: np.ndarray  # s_m
    model_work_s: np.ndarray  # w_m, seconds at one reference core
    model_input_mbit: np.ndarray
    model_output_mbit: np.ndarray
    stage_requests_per_frame: np.ndarray  # per stage

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_names)

    @property
    def num_models(self) -> int:
        return len(self.model_names)

    @property
    def node_compute(self) -> np.ndarray:
        """F_e in reference cores."""
        return self.node_cores * self.node_core_speed

    def with_overrides(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def for_node(self, node: int, models: np.ndarray) -> Scenario:
        """This scenario cut down to edge node ``node`` (as node 0), its cameras and ``models``.

        Fields are selected by their prefix (``node_``, ``camera_``, ``model_``), so a field
        added later is cut down too. Nodes are independent given the demand, so a node's
        objective is the same here as in the full scenario.
        """
        return self._cut(np.array([node]), np.asarray(models, dtype=np.int64))

    def for_nodes(self, nodes: np.ndarray) -> Scenario:
        """This scenario cut down to edge ``nodes`` (renumbered in that order), their cameras and every model.

        A node's slot objective is the same as in the full scenario; what depends on other nodes
        (downloads from a site neighbour, :func:`~edgeaigc.policy.system_model.download_megabytes`) is not.
        """
        return self._cut(np.asarray(nodes, dtype=np.int64), np.arange(self.num_models))

    def _cut(self, nodes: np.ndarray, models: np.ndarray) -> Scenario:
        cameras = np.flatnonzero(np.isin(self.camera_node, nodes))
        index = {"node_": nodes, "camera_": cameras, "model_": models}
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            prefix = next((p for p in index if field.name.startswith(p)), None)
            if prefix is None:
                continue
            value = getattr(self, field.name)
            picked = index[prefix]
            changes[field.name] = tuple(value[i] for i in picked) if isinstance(value, tuple) else value[picked]
        renumbered = np.zeros(self.num_nodes, dtype=np.int64)
        renumbered[nodes] = np.arange(nodes.size)
        changes["camera_node"] = renumbered[self.camera_node[cameras]]
        return dataclasses.replace(self, **changes)


def bundled_scenario_path(name: str) -> Path:
    resource = resources.files("edgeaigc.policy").joinpath("scenarios", f"{name}.yaml")
    return Path(str(resource))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a bundled scenario by name (``traffic-city``) or any scenario YAML by path."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in BUNDLED_SCENARIOS:
        path = bundled_scenario_path(str(name_or_path))
    if not path.exists():
        raise ScenarioError(
            f"scenario {str(name_or_path)!r} is neither a bundled scenario "
            f"({', '.join(BUNDLED_SCENARIOS)}) nor an existing file"
        )
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping")
    return scenario_from_dict(document, base_dir=path.parent)


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ScenarioError(f"{where}.{key} is required")
    return mapping[key]


def _number(value: Any, where: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where} must be a number, got {value!r}")
    number = float(value)
    if positive and number <= 0:
        raise ScenarioError(f"{where} must be > 0, got {number}")
    if minimum is not None and number < minimum:
        raise ScenarioError(f"{where} must be >= {minimum}, got {number}")
    return number


#: Fields that may be zero (a free resource, a model returning next to nothing); others must be > 0.
_MAY_BE_ZERO = {"energy_price_per_core_second", "input_kb", "output_kb"}


def _draw(value: Any, where: str, rng: np.random.Generator) -> float:
    """A number, or ``[low, high]`` drawn uniformly (the scenario's layout is seeded)."""
    field = where.rsplit(".", 1)[-1]
    limits: dict[str, Any] = {"minimum": 0.0} if field in _MAY_BE_ZERO else {"positive": True}
    if isinstance(value, list):
        if len(value) != 2:
            raise ScenarioError(f"{where} must be a number or [low, high], got {value!r}")
        low = _number(value[0], f"{where}[0]", **limits)
        high = _number(value[1], f"{where}[1]", **limits)
        if high < low:
            raise ScenarioError(f"{where}: high {high} is below low {low}")
        return float(rng.uniform(low, high))
    return _number(value, where, **limits)


#: The value of a model's ``work_ms`` that takes the figure from the scenario's calibration file.
CALIBRATED = "calibrated"


def load_calibration(path: Path) -> dict[str, float]:
    """Work per request (ms at one reference core) of each model of a calibration file.

    The file is the JSON written by ``edgeaigc bench-serving --parts work``:
    ``{"models": {"<name>": {"work_ms": 16.7, ...}, ...}, ...}``.
    """
    where = f"calibration ({path})"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ScenarioError(f"{where}: file does not exist") from error
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(f"{where}: not a readable JSON file: {error}") from error
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not models:
        raise ScenarioError(f"{where}: needs a non-empty 'models' mapping of name -> {{work_ms: ...}}")
    work: dict[str, float] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or "work_ms" not in entry:
            raise ScenarioError(f"{where}: models.{name}.work_ms is required")
        work[str(name)] = _number(entry["work_ms"], f"{where}: models.{name}.work_ms", positive=True)
    return work


def _calibration(document: dict[str, Any], base_dir: Path) -> tuple[Path | None, dict[str, float]]:
    value = document.get("calibration")
    if value is None:
        return None, {}
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"calibration must be a path to a calibration JSON file, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = base_dir / path
    return path, load_calibration(path)


def _model_work_ms(
    model_name: str, group: dict[str, Any], where: str, calibration: tuple[Path | None, dict[str, float]]
) -> float | None:
    """The calibrated work of a model marked ``work_ms: calibrated``; None for any other value."""
    if group.get("work_ms") != CALIBRATED:
        if "calibrated_as" in group:
            raise ScenarioError(f"{where}.calibrated_as needs work_ms: {CALIBRATED}")
        return None
    path, work = calibration
    if path is None:
        raise ScenarioError(
            f"{where}.work_ms is {CALIBRATED!r} but the scenario names no calibration file "
            "(add a top-level 'calibration: path/to/work_ms.json')"
        )
    entry = str(group.get("calibrated_as", model_name))
    if entry not in work:
        raise ScenarioError(
            f"{where}.work_ms is {CALIBRATED!r} but calibration {path} has no model {entry!r} "
            f"(it has {', '.join(sorted(work))}); measure it or set calibrated_as"
        )
    return work[entry]


def _expand(groups: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Expand ``[{name: 'pi-{i}', count: 3, ...}]`` into named entries."""
    if not isinstance(groups, list) or not groups:
        raise ScenarioError(f"{where} must be a non-empty list")
    entries: list[tuple[str, dict[str, Any]]] = []
    for index, group in enumerate(groups):
        group_where = f"{where}[{index}]"
        if not isinstance(group, dict):
            raise ScenarioError(f"{group_where} must be a mapping")
        name = str(_require(group, "name", group_where))
        count = int(_number(group.get("count", 1), f"{group_where}.count", positive=True))
        if count > 1 and "{i}" not in name:
            raise ScenarioError(f"{group_where}.name must contain '{{i}}' when count > 1")
        for i in range(count):
            entries.append((name.replace("{i}", str(i)), group))
    names = [name for name, _ in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ScenarioError(f"{where}: duplicate names {duplicates}")
    return entries


def _demand_config(document: dict[str, Any], base_dir: Path) -> DemandConfig:
    demand = document.get("demand", {}) or {}
    where = "demand"
    profile = tuple(float(v) for v in demand.get("daily_profile", [1.0] * 24))
    if len(profile) != 24 or min(profile) < 0:
        raise ScenarioError(f"{where}.daily_profile must list 24 non-negative numbers")
    night = demand.get("night_hours", [20, 6])
    if not (isinstance(night, list) and len(night) == 2):
        raise ScenarioError(f"{where}.night_hours must be [start, end]")
    trace = demand.get("trace")
    trace_path: Path | None = None
    timestamp_column = "timestamp"
    count_columns: tuple[str, ...] = ()
    if trace is not None:
        if not isinstance(trace, dict):
            raise ScenarioError(f"{where}.trace must be a mapping with a 'path'")
        trace_path = Path(str(_require(trace, "path", f"{where}.trace")))
        if not trace_path.is_absolute():
            trace_path = base_dir / trace_path
        if not trace_path.exists():
            raise ScenarioError(f"{where}.trace.path: {trace_path} does not exist")
        timestamp_column = str(trace.get("timestamp_column", "timestamp"))
        columns = trace.get("count_columns", [])
        count_columns = tuple(str(c) for c in (columns if isinstance(columns, list) else [columns]))
    return DemandConfig(
        zipf_exponent=_number(demand.get("zipf_exponent", 1.0), f"{where}.zipf_exponent", minimum=0),
        rank_shift_every_slots=int(
            _number(demand.get("rank_shift_every_slots", 60), f"{where}.rank_shift_every_slots", positive=True)
        ),
        variant_switch_probability=_number(
            demand.get("variant_switch_probability", 0.05), f"{where}.variant_switch_probability", minimum=0
        ),
        daily_profile=profile,
        night_hours=(int(night[0]) % 24, int(night[1]) % 24),
        daypart_affinity=_number(demand.get("daypart_affinity", 4.0), f"{where}.daypart_affinity", positive=True),
        burst_probability=_number(demand.get("burst_probability", 0.0), f"{where}.burst_probability", minimum=0),
        burst_slots=int(_number(demand.get("burst_slots", 10), f"{where}.burst_slots", positive=True)),
        burst_multiplier=_number(demand.get("burst_multiplier", 2.0), f"{where}.burst_multiplier", positive=True),
        trace_path=trace_path,
        trace_timestamp_column=timestamp_column,
        trace_count_columns=count_columns,
    )


def scenario_from_dict(document: dict[str, Any], base_dir: Path | None = None) -> Scenario:
    """Build a :class:`Scenario` from a parsed YAML document (see ``scenarios/*.yaml``)."""
    base_dir = base_dir or Path.cwd()
    rng = np.random.default_rng(int(document.get("layout_seed", 0)))
    name = str(document.get("name", "custom"))

    reward_doc = document.get("reward", {}) or {}
    # A scenario file and a PlacementPolicy leave out the same things with the same meaning.
    reward = RewardWeights(
        alpha=_number(reward_doc.get("alpha", POLICY_DEFAULTS["reward.alpha"]), "reward.alpha", minimum=0),
        beta=_number(reward_doc.get("beta", POLICY_DEFAULTS["reward.beta"]), "reward.beta", minimum=0),
        t_ref_s=_number(
            reward_doc.get("t_ref_s", POLICY_DEFAULTS["reward.tRefSeconds"]), "reward.t_ref_s", positive=True
        ),
        c_ref_per_request=_number(
            reward_doc.get("c_ref_per_request", POLICY_DEFAULTS["reward.cRefPerRequest"]),
            "reward.c_ref_per_request",
            positive=True,
        ),
    )
    cloud = _require(document, "cloud", "scenario")

    nodes = _expand(_require(document, "edge_nodes", "scenario"), "edge_nodes")
    node_fields: dict[str, list[float]] = {
        key: []
        for key in (
            "storage_mb",
            "cores",
            "core_speed",
            "bandwidth_mhz",
            "backhaul_mbps",
            "rtt_ms",
            "energy_price_per_core_second",
        )
    }
    node_site_names: list[str] = []
    for node_name, group in nodes:
        # Every node of a group shares the group's site; no site: a site of its own.
        site = group.get("site")
        if site is not None and (not isinstance(site, str) or not site or "{i}" in site):
            raise ScenarioError(f"edge_nodes[{node_name}].site must be a non-empty name without '{{i}}', got {site!r}")
        node_site_names.append(f"node:{node_name}" if site is None else f"site:{site}")
        for key, values in node_fields.items():
            values.append(
                _draw(_require(group, key, f"edge_nodes[{node_name}]"), f"edge_nodes[{node_name}].{key}", rng)
            )

    models = _expand(_require(document, "models", "scenario"), "models")
    calibration = _calibration(document, base_dir)
    stage_index, daypart_index = [], []
    model_fields: dict[str, list[float]] = {key: [] for key in ("size_mb", "work_ms", "input_kb", "output_kb")}
    for model_name, group in models:
        where = f"models[{model_name}]"
        stage = str(_require(group, "stage", where))
        if stage not in STAGES:
            raise ScenarioError(f"{where}.stage must be one of {STAGES}, got {stage!r}")
        daypart = str(group.get("daypart", "any"))
        if daypart not in DAYPARTS:
            raise ScenarioError(f"{where}.daypart must be one of {DAYPARTS}, got {daypart!r}")
        stage_index.append(STAGES.index(stage))
        daypart_index.append(DAYPARTS.index(daypart))
        calibrated = _model_work_ms(model_name, group, where, calibration)
        for key, values in model_fields.items():
            if key == "work_ms" and calibrated is not None:
                values.append(calibrated)
                continue
            values.append(_draw(_require(group, key, where), f"{where}.{key}", rng))
    # A stage without a model is a stage the cameras do not ask the fleet for (a pipeline whose flow
    # figures are computed in the camera, as `edgeaigc camera` does): it has no requests.

    node_storage = np.array(node_fields["storage_mb"])
    model_size = np.array(model_fields["size_mb"])
    too_big = [models[m][0] for m in range(len(models)) if model_size[m] > node_storage.max()]
    if len(too_big) == len(models):
        raise ScenarioError("models: no model fits on any edge node's storage_mb")

    cameras_doc = _require(document, "cameras", "scenario")
    where = "cameras"
    camera_count = int(_number(_require(cameras_doc, "count", where), f"{where}.count", positive=True))
    attach = str(cameras_doc.get("attach", "round-robin"))
    if attach == "round-robin":
        camera_node = np.arange(camera_count) % len(nodes)
    elif attach == "random":
        camera_node = rng.integers(0, len(nodes), size=camera_count)
    else:
        raise ScenarioError(f"{where}.attach must be 'round-robin' or 'random', got {attach!r}")
    camera_fps = np.array(
        [_draw(_require(cameras_doc, "fps", where), f"{where}.fps", rng) for _ in range(camera_count)]
    )
    link = cameras_doc.get("link", {}) or {}
    link_states = np.array([float(v) for v in link.get("spectral_efficiency_states", [0.5, 1.0, 2.0, 4.0])])
    if link_states.size == 0 or np.any(link_states <= 0):
        raise ScenarioError(f"{where}.link.spectral_efficiency_states must be positive numbers")
    stay = _number(link.get("stay_probability", 0.9), f"{where}.link.stay_probability", minimum=0)
    if stay > 1:
        raise ScenarioError(f"{where}.link.stay_probability must be <= 1")

    per_frame_doc = document.get("stage_requests_per_frame", {}) or {}
    per_frame = np.array(
        [
            _number(per_frame_doc.get(stage, default), f"stage_requests_per_frame.{stage}", minimum=0)
            for stage, default in zip(STAGES, (1.0, 4.0, 0.2), strict=True)
        ]
    )

    slot_seconds = _number(
        document.get("slot_seconds", POLICY_DEFAULTS["planningSlotSeconds"]), "slot_seconds", positive=True
    )
    rho_max = _number(document.get("rho_max", 0.95), "rho_max", positive=True)
    if rho_max >= 1:
        raise ScenarioError("rho_max must be < 1")

    return Scenario(
        name=name,
        description=str(document.get("description", "")).strip(),
        slot_seconds=slot_seconds,
        episode_slots=int(_number(document.get("episode_slots", 240), "episode_slots", positive=True)),
        slo_s=_number(document.get("slo_s", POLICY_DEFAULTS["sloSeconds"]), "slo_s", positive=True),
        rho_max=rho_max,
        request_overhead_s=_number(document.get("request_overhead_ms", 0.0), "request_overhead_ms", minimum=0) / 1000.0,
        reward=reward,
        demand=_demand_config(document, base_dir),
        cloud_core_speed=_number(_require(cloud, "core_speed", "cloud"), "cloud.core_speed", positive=True),
        cloud_price_per_core_second=_number(
            _require(cloud, "price_per_core_second", "cloud"), "cloud.price_per_core_second", minimum=0
        ),
        price_per_gb_transfer=_number(
            _require(cloud, "price_per_gb_transfer", "cloud"), "cloud.price_per_gb_transfer", minimum=0
        ),
        download_price_per_gb=_number(
            _require(cloud, "download_price_per_gb", "cloud"), "cloud.download_price_per_gb", minimum=0
        ),
        node_names=tuple(name for name, _ in nodes),
        node_storage_mb=node_storage,
        node_cores=np.array(node_fields["cores"]),
        node_core_speed=np.array(node_fields["core_speed"]),
        node_bandwidth_mhz=np.array(node_fields["bandwidth_mhz"]),
        node_backhaul_mbps=np.array(node_fields["backhaul_mbps"]),
        node_rtt_s=np.array(node_fields["rtt_ms"]) / 1000.0,
        node_energy_price_per_core_second=np.array(node_fields["energy_price_per_core_second"]),
        node_site=np.unique(node_site_names, return_inverse=True)[1].astype(np.int64),
        site_lan_mbps=_number(document.get("site_lan_mbps", DEFAULT_SITE_LAN_MBPS), "site_lan_mbps", positive=True),
        camera_names=tuple(f"camera-{u}" for u in range(camera_count)),
        camera_node=camera_node.astype(np.int64),
        camera_fps=camera_fps,
        link_states=link_states,
        link_stay_probability=stay,
        model_names=tuple(name for name, _ in models),
        model_stage=np.array(stage_index, dtype=np.int64),
        model_daypart=np.array(daypart_index, dtype=np.int64),
        model_size_mb=model_size,
        model_work_s=np.array(model_fields["work_ms"]) / 1000.0,
        model_input_mbit=np.array(model_fields["input_kb"]) * 8 / 1000.0,
        model_output_mbit=np.array(model_fields["output_kb"]) * 8 / 1000.0,
        stage_requests_per_frame=per_frame,
    )
