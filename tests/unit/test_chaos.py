"""The chaos soak's bookkeeping (cluster/chaos.py): outages after faults, the longest failed run."""

from __future__ import annotations

from edgeaigc.cluster.chaos import Fault, camera_outages, longest_failure_run


def frames(pattern: str, start: float = 100.0) -> list[dict]:
    """One frame a second: '.' answered, 'x' failed."""
    return [{"time": start + i, "ok": mark == "."} for i, mark in enumerate(pattern)]


def test_a_faults_camera_outage_runs_to_the_next_answered_frame() -> None:
    seen = frames("...xxx....x.")
    faults = [Fault("gateway", "gw", at=102.5), Fault("operator", "op", at=105.5), Fault("model-pod", "m", at=109.5)]
    camera_outages(faults, seen)
    assert (faults[0].failed_frames, faults[0].camera_outage_s) == (3, 3.5)  # frames at 103, 104, 105 failed
    assert (faults[1].failed_frames, faults[1].camera_outage_s) == (0, 0.0)  # nothing failed after it
    assert (faults[2].failed_frames, faults[2].camera_outage_s) == (1, 1.5)


def test_longest_failure_run() -> None:
    assert longest_failure_run(frames("..xx.xxxx.x")) == (4, 3.0)
    assert longest_failure_run(frames("....")) == (0, 0.0)
    assert longest_failure_run([]) == (0, 0.0)
