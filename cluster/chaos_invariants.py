"""The chaos soak's invariants over what it sampled, as pure functions (``edgeaigc bench-chaos``).

Two of the soak's checks (issue 12, item 7), kept apart from the I/O that feeds them so a finished run can
be judged again and each rule is tested without a cluster:

- **the routing table always valid**: every sample of the operator's routing-table ConfigMap parses with the
  gateway's own parser, and the gateway itself always holds a valid table and never counted an invalid one
  (:func:`judge_routing_configmap`, :func:`judge_gateway_metrics`, :class:`TableWatch`);
- **the error rate back to baseline within two decision intervals of each recovery**: the camera's failed
  share of frames after each fault's recovery, against the share before the first fault
  (:func:`baseline_error_share`, :func:`judge_recoveries`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from prometheus_client.parser import text_string_to_metric_families

from edgeaigc.inference.gateway.metrics import ROUTING_TABLE_ERRORS_TOTAL, ROUTING_TABLE_GENERATION
from edgeaigc.inference.gateway.routing_table import InvalidRoutingTable, parse_routing_table
from edgeaigc.operator.constants import ROUTING_TABLE_KEY

#: The PlacementPolicy the real-node test bed applies; its ``intervalSeconds`` is the soak's decision interval.
REAL_NODE_POLICY = (
    Path(__file__).resolve().parents[1] / "examples" / "real-node" / "edgeaigc.io_v1alpha1_placementpolicy.yaml"
)
#: Distinct invalid-table errors kept for the report (a table that stays invalid repeats the same one).
KEPT_ERRORS = 20


def decision_interval_s(policy_file: Path = REAL_NODE_POLICY) -> float:
    """``spec.intervalSeconds`` of the real-node PlacementPolicy (the one the soak's operator runs)."""
    return float(yaml.safe_load(policy_file.read_text())["spec"]["intervalSeconds"])


@dataclasses.dataclass
class TableWatch:
    """The routing table as sampled every few seconds: the operator's ConfigMap and what the gateway holds."""

    samples: int = 0
    configmap_unreachable: int = 0
    """API server down (a fault of its own): not a failure."""
    gateway_unreachable: int = 0
    """Gateway restarting (a fault of its own): not a failure."""
    invalid: int = 0
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The first of each distinct invalid-table error: time, source (configmap or gateway), error."""
    generations: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    """Source -> [lowest, highest] generation seen."""

    def record(self, at: float, source: str, generation: int | None, error: str | None) -> None:
        """One reachable sample of ``source``: its table's generation, or why it is not valid."""
        if error is not None:
            self.invalid += 1
            if len(self.errors) < KEPT_ERRORS and all(
                (kept["source"], kept["error"]) != (source, error) for kept in self.errors
            ):
                self.errors.append({"time": at, "source": source, "error": error})
        if generation is not None:
            low, high = self.generations.get(source, [generation, generation])
            self.generations[source] = [min(low, generation), max(high, generation)]

    def valid_throughout(self) -> bool:
        """No invalid sample, and both sources were actually seen (a watch that never reached them proves nothing)."""
        return self.invalid == 0 and {"configmap", "gateway"} <= set(self.generations)


def judge_routing_configmap(config_map: Mapping[str, Any] | None) -> tuple[int | None, str | None]:
    """The routing-table ConfigMap as the gateway would read it: (generation, None) or (None, why not valid).

    ``None`` is a ConfigMap that does not exist: the gateways' mounted table would vanish with it.
    """
    if config_map is None:
        return None, "the routing-table ConfigMap does not exist"
    text = (config_map.get("data") or {}).get(ROUTING_TABLE_KEY)
    if not isinstance(text, str):
        return None, f"the routing-table ConfigMap has no {ROUTING_TABLE_KEY!r} key"
    try:
        return parse_routing_table(text).generation, None
    except InvalidRoutingTable as error:
        return None, f"the ConfigMap's table is invalid: {error}"


def judge_gateway_metrics(text: str) -> tuple[int | None, str | None]:
    """The gateway's ``/metrics``: (generation in use, None), or why its routing table is not valid.

    The gateway exports the generation only while it holds a valid table, and counts every table it
    rejected as invalid (since it started) in ``routing_table_errors_total{reason="invalid"}``.
    """
    generation: int | None = None
    rejected = 0.0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == ROUTING_TABLE_GENERATION:
                    generation = int(sample.value)
                elif sample.name == ROUTING_TABLE_ERRORS_TOTAL and sample.labels.get("reason") == "invalid":
                    rejected += sample.value
    except ValueError as error:
        return None, f"the gateway's /metrics does not parse: {error}"
    if generation is None:
        return None, "the gateway holds no valid routing table (no generation in its /metrics)"
    if rejected:
        return generation, f"the gateway rejected {rejected:g} invalid routing table(s) since it started"
    return generation, None


class FaultTimes(Protocol):
    """What the error-rate check needs of a fault (:class:`edgeaigc.cluster.chaos.Fault`)."""

    kind: str
    at: float
    recovered_s: float | None


def tolerance_frames(fps: float) -> int:
    """Failed frames a judged window may have above the baseline: one second of frames, at least one.

    A component that has not recovered fails every frame (the soak's outages are unbroken runs of failed
    frames, 6-34 of them at 1 fps), so one second of frames separates a stray failure from a non-recovery;
    a baseline measured over ~30 frames cannot tell shares closer than that apart anyway.
    """
    return max(1, math.ceil(fps))


@dataclasses.dataclass
class Baseline:
    frames: int
    failed: int

    @property
    def share(self) -> float:
        return self.failed / self.frames if self.frames else 0.0


def baseline_error_share(frames: Sequence[Mapping[str, Any]], start: float, end: float) -> Baseline:
    """The failed share of the frames sent in ``[start, end)``: the soak before its first fault, from the
    moment the detector answered at the edge (the warm-up before that is the cluster coming up, not a
    baseline). Chosen over "every frame outside the faults' recovery windows" because those frames are the
    very windows being judged: a degradation after every fault would raise its own baseline."""
    window = [frame for frame in frames if start <= frame["time"] < end]
    return Baseline(len(window), sum(not frame["ok"] for frame in window))


@dataclasses.dataclass
class RecoveryJudgement:
    """One fault's error rate from two decision intervals after its recovery to the next fault."""

    kind: str
    at: float
    window_start: float | None
    window_end: float
    frames: int
    failed: int
    allowed_failed: float
    ok: bool | None
    """None: not judged (not recovered, or no frame in the window)."""

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.frames if self.frames else None


def judge_recoveries(
    faults: Sequence[FaultTimes],
    frames: Sequence[Mapping[str, Any]],
    baseline: Baseline,
    interval_s: float,
    tolerance: int,
    end: float,
) -> list[RecoveryJudgement]:
    """For each fault, the camera's frames from ``recovered_s`` + two decision intervals up to the next fault
    (the last: up to ``end``) may fail at most ``baseline.share`` of them plus ``tolerance`` frames.

    Judged on the frames, not on the component's state: a replaced model pod can be Ready before its server
    answers, and its failures then count if they outlast the two intervals.
    """
    judgements = []
    for index, fault in enumerate(faults):
        until = faults[index + 1].at if index + 1 < len(faults) else end
        if fault.recovered_s is None:
            judgements.append(RecoveryJudgement(fault.kind, fault.at, None, until, 0, 0, 0.0, None))
            continue
        start = fault.at + fault.recovered_s + 2 * interval_s
        window = [frame for frame in frames if start <= frame["time"] < until]
        failed = sum(not frame["ok"] for frame in window)
        allowed = baseline.share * len(window) + tolerance
        ok = failed <= allowed if window else None
        judgements.append(RecoveryJudgement(fault.kind, fault.at, start, until, len(window), failed, allowed, ok))
    return judgements


def recoveries_within_baseline(judgements: Sequence[RecoveryJudgement]) -> bool:
    """The summary check: every fault judged, and each back to the baseline (no fault, nothing to judge)."""
    return all(judgement.ok is True for judgement in judgements)
