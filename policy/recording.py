"""Recorded decisions of the live loop: what the operator observed, decided and what came of it.

The operator (``edgeaigc operator --record-dir DIR``) appends one *transition* per applied
decision: the observation it decided from, the cache before, the action, the plan, the next
interval's observation, and the reward the system model gives the plan on the demand that next
interval measured (the guard's honest scoring: a decision is judged on what it would have served).
Transitions go to rolling NPZ files of ``chunk_intervals`` each, written atomically (a temporary
file renamed into place), the oldest dropped beyond ``max_files`` or ``max_bytes``. Every file is
self-contained: it carries the fleet it was recorded for (the PlacementPolicy, EdgeNode,
InferenceModel and Camera specs), so ``edgeaigc train --from-recording DIR`` rebuilds the
:class:`~edgeaigc.policy.scenario.Scenario` without a cluster. docs/recording.md lists every array.

numpy only: the operator imports this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeaigc.policy.fleet import InvalidFleet, scenario_from_resources
from edgeaigc.policy.observation import Observation
from edgeaigc.policy.scenario import Scenario
from edgeaigc.policy.system_model import Plan, evaluate_slot

log = logging.getLogger(__name__)

#: Version of the file layout (the ``format`` array); a reader refuses others.
RECORDING_FORMAT = 1
#: File names: ``transitions-<first decision, unix ms>-<sequence>.npz``.
FILE_PREFIX = "transitions-"

#: Observation fields, recorded as ``<field>`` (before the decision) and ``next_<field>`` (after).
OBSERVATION_FIELDS: tuple[str, ...] = (
    "camera_rates",
    "camera_rates_recent_mean",
    "link_quality",
    "cache",
    "node_compute_utilisation",
    "hour_of_day",
)
#: Per-transition arrays of a file, in docs/recording.md's order.
TRANSITION_ARRAYS: tuple[str, ...] = (
    "time",
    *OBSERVATION_FIELDS,
    "action",
    "in_control",
    "plan_cache",
    "compute_share",
    "bandwidth_share",
    *(f"next_{field}" for field in OBSERVATION_FIELDS),
    "reward",
    "requests",
    "hits",
)


class RecordingError(ValueError):
    """A recording that cannot be used: none there, a corrupt file, another format, mixed fleets."""


def fleet_document(
    policy: Mapping[str, Any],
    edge_nodes: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
    cameras: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The resources a Scenario is built from, reduced to names and specs (what a recording keeps)."""

    def reduced(resource: Mapping[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": resource["metadata"]["name"]}, "spec": resource.get("spec") or {}}

    return {
        "policy": reduced(policy),
        "edgeNodes": sorted((reduced(r) for r in edge_nodes), key=lambda r: r["metadata"]["name"]),
        "models": sorted((reduced(r) for r in models), key=lambda r: r["metadata"]["name"]),
        "cameras": sorted((reduced(r) for r in cameras), key=lambda r: r["metadata"]["name"]),
    }


def scenario_of(fleet: Mapping[str, Any]) -> Scenario:
    """The Scenario of a :func:`fleet_document` (as the operator built it when recording)."""
    return scenario_from_resources(fleet["policy"], fleet["edgeNodes"], fleet["models"], fleet["cameras"])


@dataclasses.dataclass(frozen=True)
class DecisionTrace:
    """One applied decision as the recorder needs it (set by the operator's ``decide``)."""

    scenario: Scenario
    observation: Observation
    action: np.ndarray
    """What the plan was projected from (the in-control candidate's action)."""
    plan: Plan
    in_control: str
    """The policy whose action it was (the learned one, or a heuristic the guard handed control)."""


@dataclasses.dataclass
class _Pending:
    fleet_json: str
    trace: DecisionTrace
    time: float


def _observation_arrays(observation: Observation, prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}camera_rates": np.asarray(observation.camera_rates, np.float32),
        f"{prefix}camera_rates_recent_mean": np.asarray(observation.camera_rates_recent_mean, np.float32),
        f"{prefix}link_quality": np.asarray(observation.link_quality, np.float32),
        f"{prefix}cache": np.asarray(observation.cache > 0, np.uint8),
        f"{prefix}node_compute_utilisation": np.asarray(observation.node_compute_utilisation, np.float32),
        f"{prefix}hour_of_day": np.float32(observation.hour_of_day),
    }


class Recorder:
    """Appends the transitions of one PlacementPolicy's decisions to rolling NPZ files in ``directory``.

    Call :meth:`record` with every applied decision and :meth:`interrupt` when an interval had none
    (degraded, dry-run): a transition joins two consecutive applied decisions.

    Args:
        directory: where the files go (created).
        chunk_intervals: transitions per file.
        max_files: files kept; the oldest are deleted beyond it.
        max_bytes: bytes kept over all files; the oldest are deleted beyond it.
    """

    def __init__(self, directory: Path, chunk_intervals: int = 60, max_files: int = 100, max_bytes: int = 64 << 20):
        if chunk_intervals < 1 or max_files < 1 or max_bytes < 1:
            raise ValueError("chunk_intervals, max_files and max_bytes must be >= 1")
        self.directory = Path(directory)
        self.chunk_intervals, self.max_files, self.max_bytes = chunk_intervals, max_files, max_bytes
        self._pending: _Pending | None = None
        self._rows: list[dict[str, Any]] = []
        self._fleet_json: str | None = None
        self._names: tuple[list[str], list[str], list[str]] = ([], [], [])
        self._sequence = 0
        self.transitions = 0
        """Transitions completed since start (written or in the current chunk)."""
        self.files_written = 0

    def record(self, fleet: Mapping[str, Any], trace: DecisionTrace, now: float | None = None) -> None:
        """Complete the last decision's transition with this interval's observation; keep this one pending."""
        now = time.time() if now is None else now
        fleet_json = json.dumps(fleet, sort_keys=True, separators=(",", ":"))
        pending, self._pending = self._pending, _Pending(fleet_json, trace, now)
        if pending is None or pending.fleet_json != fleet_json:
            return  # a new fleet: the last decision's outcome is not comparable
        if self._fleet_json is not None and self._fleet_json != fleet_json:
            self.flush()
        self._fleet_json = fleet_json
        scenario = trace.scenario
        self._names = (list(scenario.node_names), list(scenario.model_names), list(scenario.camera_names))
        self._rows.append(self._transition(pending, trace.observation))
        self.transitions += 1
        if len(self._rows) >= self.chunk_intervals:
            self.flush()

    def interrupt(self) -> None:
        """An interval without an applied decision: the pending one gets no outcome."""
        self._pending = None

    @staticmethod
    def _transition(pending: _Pending, next_observation: Observation) -> dict[str, Any]:
        trace = pending.trace
        outcome = evaluate_slot(
            trace.scenario,
            trace.plan,
            next_observation.camera_rates,
            next_observation.link_quality,
            trace.observation.cache,
        )
        return {
            "time": np.float64(pending.time),
            **_observation_arrays(trace.observation),
            "action": np.asarray(trace.action, np.float32).reshape(-1),
            "in_control": trace.in_control,
            "plan_cache": np.asarray(trace.plan.cache > 0, np.uint8),
            "compute_share": np.asarray(trace.plan.compute_share, np.float32),
            "bandwidth_share": np.asarray(trace.plan.bandwidth_share, np.float32),
            **_observation_arrays(next_observation, "next_"),
            "reward": np.float32(outcome.reward),
            "requests": np.float32(outcome.requests),
            "hits": np.float32(outcome.hits),
        }

    def flush(self) -> Path | None:
        """Write the transitions collected so far to a new file (None: there were none)."""
        if not self._rows or self._fleet_json is None:
            return None
        rows, self._rows = self._rows, []
        nodes, models, cameras = self._names
        arrays: dict[str, Any] = {name: np.stack([row[name] for row in rows]) for name in TRANSITION_ARRAYS}
        arrays["in_control"] = np.array([row["in_control"] for row in rows], dtype=np.str_)
        arrays.update(
            format=np.int64(RECORDING_FORMAT),
            fleet=np.array(self._fleet_json),
            node_names=np.array(nodes, dtype=np.str_),
            model_names=np.array(models, dtype=np.str_),
            camera_names=np.array(cameras, dtype=np.str_),
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{FILE_PREFIX}{int(rows[0]['time'] * 1000):013d}-{self._sequence:06d}.npz"
        self._sequence += 1
        # Atomic: a reader (the trainer, the promotion) never sees a half-written file.
        handle, temporary = tempfile.mkstemp(prefix=".writing-", suffix=".npz", dir=self.directory)
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez_compressed(file, **arrays)
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.files_written += 1
        self._enforce_bounds()
        return self.directory / name

    def _enforce_bounds(self) -> None:
        files = recording_files(self.directory)
        sizes = [f.stat().st_size for f in files]
        while files and (len(files) > self.max_files or sum(sizes) > self.max_bytes) and len(files) > 1:
            files.pop(0).unlink(missing_ok=True)
            sizes.pop(0)


def recording_files(directory: Path) -> list[Path]:
    """The recording's files, oldest first (their names sort by time)."""
    return sorted(Path(directory).glob(f"{FILE_PREFIX}*.npz"))


@dataclasses.dataclass(frozen=True)
class Recording:
    """Transitions of one fleet, concatenated over files (oldest first)."""

    fleet: dict[str, Any]
    scenario: Scenario
    arrays: dict[str, np.ndarray]
    """Every :data:`TRANSITION_ARRAYS` name -> ``[T, ...]``."""
    files: list[Path]

    def __len__(self) -> int:
        return len(self.arrays["reward"])

    def observation(self, index: int, prefix: str = "") -> Observation:
        """The observation before (``prefix=""``) or after (``"next_"``) transition ``index``."""
        a = self.arrays
        return Observation(
            camera_rates=a[f"{prefix}camera_rates"][index].astype(float),
            camera_rates_recent_mean=a[f"{prefix}camera_rates_recent_mean"][index].astype(float),
            link_quality=a[f"{prefix}link_quality"][index].astype(float),
            cache=a[f"{prefix}cache"][index].astype(float),
            node_compute_utilisation=a[f"{prefix}node_compute_utilisation"][index].astype(float),
            hour_of_day=float(a[f"{prefix}hour_of_day"][index]),
        )

    @property
    def fleet_digest(self) -> str:
        return fleet_digest(self.fleet)


def fleet_digest(fleet: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fleet, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _read_file(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise RecordingError(f"{path}: not a readable NPZ file ({error})") from error
    if "format" not in arrays or int(arrays["format"]) != RECORDING_FORMAT:
        found = arrays.get("format")
        raise RecordingError(f"{path}: recording format {found} is not {RECORDING_FORMAT}")
    missing = [name for name in (*TRANSITION_ARRAYS, "fleet") if name not in arrays]
    if missing:
        raise RecordingError(f"{path}: arrays missing: {', '.join(missing)}")
    lengths = {len(arrays[name]) for name in TRANSITION_ARRAYS}
    if len(lengths) != 1:
        raise RecordingError(f"{path}: per-transition arrays differ in length ({sorted(lengths)})")
    return arrays


def load_recording(directory: str | Path, newest_fleet_only: bool = False) -> Recording:
    """Every transition in ``directory`` (one fleet), checked against the fleet it was recorded for.

    Args:
        newest_fleet_only: keep the files of the fleet the newest file was recorded for, instead of
            refusing a directory where the fleet changed.

    Raises:
        RecordingError: no files, an unreadable or inconsistent file, files of different fleets, or a
            fleet that no longer builds a valid scenario.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordingError(f"{directory} is not a directory")
    paths = recording_files(directory)
    if not paths:
        nested = sorted({p.parent for p in directory.rglob(f"{FILE_PREFIX}*.npz")})
        hint = f" (recordings below it: {', '.join(str(p) for p in nested[:5])})" if nested else ""
        raise RecordingError(f"no {FILE_PREFIX}*.npz files in {directory}{hint}")
    documents = [(path, _read_file(path)) for path in paths]
    if newest_fleet_only:
        newest = str(documents[-1][1]["fleet"])
        documents = [(path, arrays) for path, arrays in documents if str(arrays["fleet"]) == newest]
        paths = [path for path, _ in documents]
    fleets = {str(arrays["fleet"]) for _, arrays in documents}
    if len(fleets) > 1:
        by_fleet = {fleet_digest(json.loads(f)): [p.name for p, a in documents if str(a["fleet"]) == f] for f in fleets}
        raise RecordingError(
            f"{directory} holds recordings of {len(fleets)} different fleets (a fleet changed while recording): "
            + "; ".join(f"fleet {digest}: {len(names)} files from {names[0]}" for digest, names in by_fleet.items())
            + ". Move one fleet's files into a directory of their own."
        )
    fleet = json.loads(fleets.pop())
    try:
        scenario = scenario_of(fleet)
    except (InvalidFleet, KeyError, TypeError) as error:
        raise RecordingError(f"{directory}: the recorded fleet does not build a scenario: {error}") from error
    E, M, U = scenario.num_nodes, scenario.num_models, scenario.num_cameras
    expected = {"camera_rates": (U, M), "cache": (E, M), "link_quality": (U,), "action": (2 * E * M + U,)}
    arrays: dict[str, np.ndarray] = {}
    for name in TRANSITION_ARRAYS:
        arrays[name] = np.concatenate([a[name] for _, a in documents])
    for name, shape in expected.items():
        if arrays[name].shape[1:] != shape:
            raise RecordingError(
                f"{directory}: {name} has shape {arrays[name].shape[1:]}, the recorded fleet needs {shape}"
            )
    if not len(arrays["reward"]):
        raise RecordingError(f"{directory}: the files hold no transitions")
    return Recording(fleet, scenario, arrays, paths)
