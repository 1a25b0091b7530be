"""The leader election's pure rules: expiry on the observer's clock, records, timings, the fence."""

from __future__ import annotations

import argparse
import contextlib
import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from edgeaigc.operator import cli
from edgeaigc.operator.decide import Decision
from edgeaigc.operator.handlers import write_results
from edgeaigc.operator.leader import (
    ElectionTimings,
    LeaseElector,
    LeaseRecord,
    Observed,
    held_by_another,
    next_record,
    observe,
    released,
    unfenced,
)
from edgeaigc.operator.loop import NOT_LEADER, DecisionLoop
from edgeaigc.operator.reconcile import Changes

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
LATER = T0 + datetime.timedelta(seconds=30)


def _record(holder: str, transitions: int = 3, duration: int = 10) -> LeaseRecord:
    return LeaseRecord(holder, duration, T0, T0, transitions)


def test_expiry_is_measured_from_when_this_replica_saw_the_lease_change_not_from_renew_time() -> None:
    # The Lease's renewTime says 1970: a skewed leader clock must not make it look expired.
    skewed = LeaseRecord("a", 10, None, datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC), 0)
    seen = observe(None, skewed, "7", now=100.0)
    assert held_by_another(seen, "b", now=109.9)
    assert not held_by_another(seen, "b", now=110.0)
    # The same version seen again keeps the first sighting's clock; a new version restarts it.
    assert observe(seen, skewed, "7", now=105.0).seen_at == 100.0
    assert observe(seen, dataclass_renewed(skewed), "8", now=105.0).seen_at == 105.0


def dataclass_renewed(record: LeaseRecord) -> LeaseRecord:
    return LeaseRecord(record.holder, record.lease_duration_s, record.acquire_time, LATER, record.transitions)


def test_own_or_empty_or_released_leases_are_never_held_by_another() -> None:
    assert not held_by_another(observe(None, _record("me"), "1", 0.0), "me", 0.0)
    assert not held_by_another(observe(None, _record(""), "1", 0.0), "me", 0.0)
    release = released(_record("other"), T0)
    assert release.holder == "" and release.lease_duration_s == 1 and release.transitions == 3
    assert not held_by_another(observe(None, release, "2", 0.0), "me", 0.0)


def test_records_renew_keeps_acquire_time_and_takeover_counts_a_transition() -> None:
    assert next_record(None, "me", 10, T0) == LeaseRecord("me", 10, T0, T0, 0)
    renewal = next_record(Observed(_record("me"), "1", 0.0), "me", 10, LATER)
    assert renewal == LeaseRecord("me", 10, T0, LATER, 3)
    takeover = next_record(Observed(_record("dead"), "1", 0.0), "me", 10, LATER)
    assert takeover == LeaseRecord("me", 10, LATER, LATER, 4)
    after_release = next_record(Observed(released(_record("old"), T0), "2", 0.0), "me", 10, LATER)
    assert after_release is not None and after_release.transitions == 4


def test_record_round_trips_through_the_lease_spec() -> None:
    record = LeaseRecord("me", 10, T0, LATER, 2)
    assert LeaseRecord.from_spec(record.to_spec()) == record
    assert LeaseRecord.from_spec(None) == LeaseRecord("", 0, None, None, 0)


@pytest.mark.parametrize(
    ("timings", "problem"),
    [
        (ElectionTimings(10, 10, 1), "longer than the renew deadline"),
        (ElectionTimings(10, 6, 5), "1.2 x the retry period"),
        (ElectionTimings(10, 6, 0), "positive"),
    ],
)
def test_unsound_timings_are_named(timings: ElectionTimings, problem: str) -> None:
    assert any(problem in found for found in timings.problems())


def test_default_timings_are_sound_and_take_over_within_15_s() -> None:
    defaults = ElectionTimings()
    assert defaults.problems() == []
    # Worst case after a SIGKILL: a retry period to see the last renew, the lease, a retry to notice.
    assert defaults.lease_duration_s + 2 * defaults.retry_period_s < 15


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fence_closes_at_the_renew_deadline_before_the_lease_can_expire_elsewhere() -> None:
    clock = Clock()
    timings = ElectionTimings(10, 6, 1)
    elector = LeaseElector(None, "ns", "lease", "me", timings, clock=clock)  # type: ignore[arg-type]
    with elector.fenced() as leading:
        assert not leading  # never renewed: a standby writes nothing
    elector.last_renew = 0.0  # as after a successful acquire sent at t=0
    clock.now = 5.9
    with elector.fenced() as leading:
        assert leading
    clock.now = 6.0
    with elector.fenced() as leading:
        assert not leading
    assert elector.release() is False  # it never saw itself as holder: nothing to release
    assert elector.last_renew is None


def _parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--metrics-port", "0", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "city", "--leader-elect", "--peering", "p"], "exclude each other"),
        (["-n", "city", "--leader-elect", "--lease-duration", "5", "--renew-deadline", "6"], "longer than"),
        (["-n", "a", "-n", "b", "--leader-elect"], "--leader-election-namespace"),
        (["-A", "--leader-elect"], "--leader-election-namespace"),
    ],
)
def test_bad_election_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "POD_NAMESPACE_FILE", cli.Path("/nonexistent/namespace"))
    assert cli.run(_parsed(*argv)) == 2
    assert message in capsys.readouterr().err


def test_lease_namespace_and_identity_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "POD_NAMESPACE_FILE", cli.Path("/nonexistent/namespace"))
    assert cli.lease_namespace(_parsed("-n", "city", "--leader-elect")) == "city"
    assert cli.lease_namespace(_parsed("-A", "--leader-election-namespace", "ops")) == "ops"
    assert cli.election_identity("pod-1") == "pod-1"
    assert cli.election_identity("") != cli.election_identity("")  # two processes on one host differ


def test_status_writes_are_fenced_off_when_not_leading() -> None:
    @contextlib.contextmanager
    def not_leading() -> Iterator[bool]:
        yield False

    # Nothing listens on port 9: any write that got past the fence would fail with a connection error.
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    nowhere = client.ApiClient(configuration)
    policy = {"metadata": {"namespace": "city", "name": "p"}, "spec": {}, "status": {}}
    assert write_results(nowhere, policy, Decision(), not_leading) is False
    with pytest.raises(Exception, match=r"Connection refused|Max retries"):
        write_results(nowhere, policy, Decision())


def test_a_decision_is_not_applied_when_the_fence_is_closed() -> None:
    @contextlib.contextmanager
    def not_leading() -> Iterator[bool]:
        yield False

    # Without a cluster: the reconciler is a bare object, so any attempt to apply would fail as a bug
    # (DecisionFailed) instead of being fenced off (NotLeader).
    loop = DecisionLoop.__new__(DecisionLoop)
    loop.reconciler = object()  # type: ignore[assignment]
    loop.fence = not_leading
    changes = Changes(apply=[{"kind": "Deployment"}], delete=[], unchanged=0)
    assert loop.apply("city", Decision(), changes).degraded_reason == NOT_LEADER
    loop.fence = unfenced
    assert loop.apply("city", Decision(), changes).degraded_reason == "DecisionFailed"


def test_after_release_no_renew_takes_the_lease_back() -> None:
    calls: list[str] = []

    class CountingApi:  # any call is recorded; none may happen once released
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            raise RuntimeError(name)

    elector = LeaseElector(CountingApi(), "ns", "lease", "me", ElectionTimings())  # type: ignore[arg-type]
    assert elector.release() is False
    assert elector.try_acquire_or_renew() is False
    assert calls == [] and not elector.is_leading()
