"""The chaos soak's bookkeeping (cluster/chaos.py): outages after faults, the longest failed run."""

from __future__ import annotations

from edgeaigc.cluster.chaos import Fault, camera_outages, longest_failure_run


def frames(pattern: str, start: float = 100.0) -> list[dict]:
    """One frame a second: '.' answered, 'x' failed."""
    return [{"time": start + i, "ok": mark == "."} for i, mark in enumerate(pattern)]


def test_a_faults_camera_outage_runs_to_the_answer_after_its_failures() -> None:
    seen = frames("...xxx....x..xx.")
    faults = [Fault("gateway", "gw", at=102.5), Fault("operator", "op", at=106.5), Fault("model-pod", "m", at=108.5)]
    camera_outages(faults, seen)
    assert (faults[0].failed_frames, faults[0].camera_outage_s) == (3, 3.5)  # frames at 103-105 failed, 106 answered
    assert (faults[1].failed_frames, faults[1].camera_outage_s) == (0, 0.0)  # nothing failed before the next fault
    # A replaced pod answers one frame (109), then frames 110, 113 and 114 fail: all counted, the outage
    # runs to the answer after the first failure (111).
    assert (faults[2].failed_frames, faults[2].camera_outage_s) == (3, 2.5)


def test_longest_failure_run() -> None:
    assert longest_failure_run(frames("..xx.xxxx.x")) == (4, 3.0)
    assert longest_failure_run(frames("....")) == (0, 0.0)
    assert longest_failure_run([]) == (0, 0.0)
