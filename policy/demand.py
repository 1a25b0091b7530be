"""Demand and link traces for one episode: synthetic (drifting popularity) or from a CSV.

An episode is generated whole at reset, so that every policy evaluated on the same seed sees
the same requests and the clairvoyant oracle can read the future. Slot 0 is the warm-up slot
measured before the first decision; decisions are made for slots ``1..T``.

Synthetic demand (DESIGN §1, issue 2): each camera runs one variant per pipeline stage; the
variant it uses is re-drawn now and then from the stage's popularity, which is Zipf-skewed,
swaps ranks over time, favours day or night variants by hour, and differs by camera site.
Frames per second follow a daily traffic profile with incident bursts.

Trace demand: a CSV with a timestamp column (ISO 8601 or Unix seconds) and one or more count
columns (e.g. vehicles per interval from a roadside counter). Each row's count is held over the
interval it covers and resampled to slots (a finer trace is summed, a coarser one spread evenly
over the slots it covers: :func:`resample_counts`); each column is scaled to mean 1 and replaces
the daily profile and bursts as the activity of the cameras mapped to it (camera ``u`` takes
column ``u mod n``).
"""

from __future__ import annotations

import csv
import dataclasses
from datetime import datetime
from pathlib import Path

import numpy as np

from edgeaigc.policy.scenario import DAYPARTS, STAGES, Scenario, ScenarioError


@dataclasses.dataclass(frozen=True)
class EpisodeTrace:
    """Everything random about one episode, fixed at reset."""

    rates: np.ndarray
    """Expected requests per second, shape ``[T + 1, U, M]``."""
    counts: np.ndarray
    """Requests that actually arrive in each slot (Poisson around ``rates``), ``[T + 1, U, M]``."""
    link_quality: np.ndarray
    """Spectral efficiency of each camera's link (bit/s/Hz), ``[T + 1, U]``."""
    hour_of_day: np.ndarray
    """Hour (float, 0-24) at the start of each slot, ``[T + 1]``."""

    @property
    def num_slots(self) -> int:
        return self.rates.shape[0] - 1

    def measured_rates(self, slot: int) -> np.ndarray:
        """Requests per second of each (camera, model) as a counter would report them."""
        return self.counts[slot]


def read_count_trace(
    path: Path, timestamp_column: str, count_columns: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(unix_seconds[N], counts[N, C])`` from a CSV of counts, sorted by time."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            rows = list(reader)
    except OSError as error:
        raise ScenarioError(f"demand.trace: cannot read {path}: {error}") from error
    if timestamp_column not in header:
        raise ScenarioError(f"demand.trace: {path} has no column {timestamp_column!r} (columns: {header})")
    columns = count_columns or tuple(c for c in header if c != timestamp_column)
    missing = [c for c in columns if c not in header]
    if missing or not columns:
        raise ScenarioError(f"demand.trace: {path} lacks count column(s) {missing or '(none given)'}")
    if len(rows) < 2:
        raise ScenarioError(f"demand.trace: {path} needs at least two rows")
    times = np.empty(len(rows))
    counts = np.empty((len(rows), len(columns)))
    for i, row in enumerate(rows):
        stamp = (row[timestamp_column] or "").strip()
        try:
            times[i] = float(stamp)
        except ValueError:
            try:
                times[i] = datetime.fromisoformat(stamp).timestamp()
            except ValueError as error:
                raise ScenarioError(
                    f"demand.trace: {path} row {i + 2}: timestamp {stamp!r} is neither Unix seconds nor ISO 8601"
                ) from error
        for j, column in enumerate(columns):
            try:
                counts[i, j] = float(row[column])
            except (TypeError, ValueError) as error:
                raise ScenarioError(
                    f"demand.trace: {path} row {i + 2}: {column}={row[column]!r} is not a number"
                ) from error
    if np.any(counts < 0):
        raise ScenarioError(f"demand.trace: {path} has negative counts")
    order = np.argsort(times)
    return times[order], counts[order]


def row_durations(times: np.ndarray) -> np.ndarray:
    """Seconds each row of a sorted trace counts over: until the next row, at most the trace's interval.

    The trace's interval is the median gap between rows; a longer gap is a hole in the trace (a
    counter that was down), not one long count, so a row never stretches over it. The last row
    covers one interval.
    """
    gaps = np.diff(times)
    interval = float(np.median(gaps)) if gaps.size else 0.0
    return np.minimum(np.append(gaps, interval), interval)


def resample_counts(times: np.ndarray, counts: np.ndarray, slot_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts per slot of ``slot_seconds``; return ``(slot_start_times, activity[S, C])``.

    Each row's count is taken as *held*: spread evenly over the seconds the row covers
    (:func:`row_durations`), and every slot gets the part of each row that falls in it. So a trace
    finer than the slot is summed, a coarser one (hourly counts with 60 s slots) is spread over the
    slots it covers, an interval that does not divide the slot is split in proportion, and the
    total count is preserved in every case. Held rather than interpolated: a count is a total over
    its interval and says nothing about when in it the vehicles came; holding it keeps every
    slot's count inside its own row's (a linear interpolation between rows moves counts across
    row boundaries and needs a correction to keep their totals). Rows with the same timestamp are
    added together.

    Activity is each column scaled to mean 1 over the trace (a column of zeros stays zero).
    """
    times, first = np.unique(times, return_index=True)
    counts = np.add.reduceat(counts, first, axis=0) if len(first) else counts
    if times.size < 2:
        raise ScenarioError("demand.trace: needs rows at two or more distinct times")
    ends = times + row_durations(times)
    # The cumulative count is piecewise linear: it rises over each row's covered seconds and stays
    # flat over a hole; a slot's count is its rise between the slot's edges.
    cumulative = np.concatenate([np.zeros((1, counts.shape[1])), np.cumsum(counts, axis=0)])
    corners = np.stack([times, ends], axis=1).reshape(-1)
    values = np.repeat(cumulative[1:], 2, axis=0)
    values[0::2] = cumulative[:-1]
    distinct = np.r_[True, np.diff(corners) > 0]  # a row that ends where the next starts: one corner
    corners, values = corners[distinct], values[distinct]
    num_slots = int(np.ceil((ends[-1] - times[0]) / slot_seconds - 1e-9))
    edges = times[0] + np.arange(num_slots + 1) * slot_seconds
    at_edges = np.stack([np.interp(edges, corners, values[:, j]) for j in range(counts.shape[1])], axis=1)
    per_slot = np.diff(at_edges, axis=0)
    mean = per_slot.mean(axis=0, keepdims=True)
    activity = np.divide(per_slot, mean, out=np.zeros_like(per_slot), where=mean > 0)
    return edges[:-1], activity


class DemandGenerator:
    """Draws :class:`EpisodeTrace` objects for a scenario."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._trace: tuple[np.ndarray, np.ndarray] | None = None
        config = scenario.demand
        if config.trace_path is not None:
            times, counts = read_count_trace(
                config.trace_path, config.trace_timestamp_column, config.trace_count_columns
            )
            self._trace = resample_counts(times, counts, scenario.slot_seconds)

    def episode(
        self, rng: np.random.Generator, num_slots: int | None = None, start_hour: float | None = None
    ) -> EpisodeTrace:
        """A trace of ``num_slots`` slots (default: the scenario's episode) starting at ``start_hour`` (default:
        drawn uniformly; a recorded count trace starts where it likes)."""
        scenario = self.scenario
        T = (num_slots or scenario.episode_slots) + 1
        hours, activity = self._activity(rng, T, start_hour)
        variant_weight = self._variant_weights(rng, hours)  # [T, U, M]
        active = self._active_variants(rng, variant_weight)  # [T, U, M] one-hot per stage
        per_frame = scenario.stage_requests_per_frame[scenario.model_stage]  # [M]
        rates = activity[:, :, None] * scenario.camera_fps[None, :, None] * per_frame[None, None, :] * active
        counts = rng.poisson(rates * scenario.slot_seconds) / scenario.slot_seconds
        link = self._link_quality(rng, T, scenario.num_cameras)
        return EpisodeTrace(
            rates=rates.astype(np.float64),
            counts=counts.astype(np.float64),
            link_quality=link,
            hour_of_day=hours,
        )

    def _activity(
        self, rng: np.random.Generator, T: int, start_hour: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hour of day per slot and activity (frame-rate multiplier) per slot and camera."""
        scenario, config = self.scenario, self.scenario.demand
        U = scenario.num_cameras
        if self._trace is not None:
            starts, trace_activity = self._trace
            offset = int(rng.integers(0, len(starts)))
            index = (offset + np.arange(T)) % len(starts)
            hours = np.array(
                [
                    datetime.fromtimestamp(float(starts[i])).hour + datetime.fromtimestamp(float(starts[i])).minute / 60
                    for i in index
                ]
            )
            columns = np.arange(U) % trace_activity.shape[1]
            return hours, trace_activity[index][:, columns]
        if start_hour is None:
            start_hour = rng.uniform(0, 24)
        hours = (start_hour + np.arange(T) * scenario.slot_seconds / 3600.0) % 24
        profile = np.array(config.daily_profile)
        # Linear interpolation between hourly values, wrapping at midnight.
        lower = np.floor(hours).astype(int) % 24
        fraction = hours - np.floor(hours)
        daily = profile[lower] * (1 - fraction) + profile[(lower + 1) % 24] * fraction
        activity = np.repeat(daily[:, None], U, axis=1)
        if config.burst_probability > 0:
            burst_left = np.zeros(U, dtype=np.int64)
            for t in range(T):
                starting = (burst_left == 0) & (rng.random(U) < config.burst_probability)
                burst_left[starting] = rng.geometric(1.0 / config.burst_slots, size=int(starting.sum()))
                activity[t, burst_left > 0] *= config.burst_multiplier
                burst_left = np.maximum(burst_left - 1, 0)
        return hours, activity

    def _variant_weights(self, rng: np.random.Generator, hours: np.ndarray) -> np.ndarray:
        """Popularity weight of each model for each camera and slot, ``[T, U, M]``."""
        scenario, config = self.scenario, self.scenario.demand
        T, U, M = len(hours), scenario.num_cameras, scenario.num_models
        stage = scenario.model_stage
        # Global Zipf ranks within each stage, with occasional adjacent swaps.
        rank = np.zeros(M, dtype=np.int64)
        for s in range(len(STAGES)):
            members = np.flatnonzero(stage == s)
            rank[members] = rng.permutation(len(members)) + 1
        zipf = np.empty((T, M))
        for t in range(T):
            if rng.random() < 1.0 / config.rank_shift_every_slots:
                s = int(rng.integers(0, len(STAGES)))
                members = np.flatnonzero(stage == s)
                if len(members) > 1:
                    r = int(rng.integers(1, len(members)))
                    a, b = members[rank[members] == r][0], members[rank[members] == r + 1][0]
                    rank[a], rank[b] = rank[b], rank[a]
            zipf[t] = rank.astype(float) ** -config.zipf_exponent
        start, end = config.night_hours
        is_night = ((hours >= start) | (hours < end)) if start > end else ((hours >= start) & (hours < end))
        daypart = scenario.model_daypart
        affinity = np.ones((T, M))
        night_models, day_models = daypart == DAYPARTS.index("night"), daypart == DAYPARTS.index("day")
        affinity[:, night_models] = np.where(is_night, config.daypart_affinity, 1 / config.daypart_affinity)[:, None]
        affinity[:, day_models] = np.where(is_night, 1 / config.daypart_affinity, config.daypart_affinity)[:, None]
        # Camera sites differ (a highway camera favours highway flow models): fixed per episode.
        site = rng.lognormal(mean=0.0, sigma=0.75, size=(U, M))
        return (zipf * affinity)[:, None, :] * site[None, :, :]

    def _active_variants(self, rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
        """One active variant per (camera, stage), re-drawn with the switch probability."""
        scenario, config = self.scenario, self.scenario.demand
        T, U, M = weight.shape
        active = np.zeros((T, U, M))
        current = np.zeros((U, len(STAGES)), dtype=np.int64)
        served = np.unique(scenario.model_stage)  # the stages with a model (the others get no request)
        for t in range(T):
            redraw = (
                np.ones((U, len(STAGES)), dtype=bool)
                if t == 0
                else rng.random((U, len(STAGES))) < config.variant_switch_probability
            )
            for s in range(len(STAGES)):
                members = np.flatnonzero(scenario.model_stage == s)
                rows = np.flatnonzero(redraw[:, s])
                if rows.size == 0 or members.size == 0:  # no model of the stage: no request for it
                    continue
                w = weight[t][np.ix_(rows, members)]
                cumulative = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
                pick = (rng.random((rows.size, 1)) > cumulative).sum(axis=1)
                current[rows, s] = members[np.minimum(pick, len(members) - 1)]
            active[t, np.arange(U)[:, None], current[:, served]] = 1.0
        return active

    def _link_quality(self, rng: np.random.Generator, T: int, U: int) -> np.ndarray:
        """Birth-death Markov chain over the scenario's spectral-efficiency states."""
        states = self.scenario.link_states
        stay = self.scenario.link_stay_probability
        level = rng.integers(0, len(states), size=U)
        out = np.empty((T, U))
        for t in range(T):
            move = rng.random(U) >= stay
            step = np.where(rng.random(U) < 0.5, -1, 1)
            level = np.clip(level + move * step, 0, len(states) - 1)
            out[t] = states[level]
        return out
