"""Lease-based leader election (coordination.k8s.io/v1 Lease) with client-go's semantics.

Why not ``kubernetes.leaderelection`` (client 37): it runs a blocking loop with ``time.sleep`` in
the caller's thread, judges expiry by comparing the Lease's ``renewTime`` (the *leader's* wall
clock) with the local wall clock (so clock skew between replicas shortens or stretches the lease),
never releases the lease on shutdown (a rolling update waits a whole lease duration), and gives
the callbacks no way to fence writes against a renew deadline. client-go instead measures expiry
on the *observer's* monotonic clock from the moment it saw the record change, releases on
cancel, and stops leading when it could not renew within the renew deadline. This module does the
same, in small pure functions (tested without a cluster) and one class that talks to the API.

Timing (client-go's rules, checked by :meth:`ElectionTimings.problems`):
``lease_duration > renew_deadline > 1.2 * retry_period``. A leader that has not renewed for
``renew_deadline`` stops acting (:meth:`LeaseElector.is_leading` turns false, which fences every
write); another replica can acquire only ``lease_duration`` after it *saw* the last renew, which is
later than the leader's own renew time — so the old leader has stopped before a new one starts.
A standby acquires at most ``lease_duration + 2 * retry_period`` after the leader's death
(``retry_period`` to see the last renew, ``retry_period`` to notice the expiry).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2  # client-go's: the renew deadline must leave room for one jittered retry


@dataclasses.dataclass(frozen=True)
class ElectionTimings:
    """client-go's three durations, in seconds (defaults chosen for a takeover within 15 s)."""

    lease_duration_s: float = 10.0
    """How long a standby waits, after it last saw the Lease change, before it takes the lease."""
    renew_deadline_s: float = 6.0
    """How long the leader keeps acting without a successful renew (then it stops and exits)."""
    retry_period_s: float = 1.0
    """How often every replica tries to acquire or renew."""

    def problems(self) -> list[str]:
        """What is wrong with these timings (empty when they are sound)."""
        found = []
        if min(self.lease_duration_s, self.renew_deadline_s, self.retry_period_s) <= 0:
            found.append("lease duration, renew deadline and retry period must be positive")
        if self.lease_duration_s <= self.renew_deadline_s:
            found.append("the lease duration must be longer than the renew deadline")
        if self.renew_deadline_s <= JITTER_FACTOR * self.retry_period_s:
            found.append(f"the renew deadline must be longer than {JITTER_FACTOR} x the retry period")
        return found


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that election uses (client-go's LeaderElectionRecord)."""

    holder: str
    lease_duration_s: int
    acquire_time: datetime.datetime | None
    renew_time: datetime.datetime | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: client.V1LeaseSpec | None) -> LeaseRecord:
        if spec is None:
            return cls("", 0, None, None, 0)
        return cls(
            holder=spec.holder_identity or "",
            lease_duration_s=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=spec.lease_transitions or 0,
        )

    def to_spec(self) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.holder or None,
            lease_duration_seconds=self.lease_duration_s,
            acquire_time=self.acquire_time,
            renew_time=self.renew_time,
            lease_transitions=self.transitions,
        )


@dataclasses.dataclass(frozen=True)
class Observed:
    """A Lease as this replica last saw it, and when (monotonic) it first saw that version."""

    record: LeaseRecord
    resource_version: str
    seen_at: float


def observe(previous: Observed | None, record: LeaseRecord, resource_version: str, now: float) -> Observed:
    """The new observation: its clock restarts only when the Lease changed since ``previous``.

    Expiry is measured from here on the local monotonic clock, never from the Lease's renewTime,
    so the replicas' wall clocks need not agree.
    """
    if previous is not None and previous.resource_version == resource_version:
        return previous
    return Observed(record, resource_version, now)


def held_by_another(observed: Observed, identity: str, now: float) -> bool:
    """Whether someone else holds a lease that has not expired as seen from here."""
    record = observed.record
    return bool(record.holder) and record.holder != identity and now < observed.seen_at + record.lease_duration_s


def next_record(
    observed: Observed | None, identity: str, lease_duration_s: int, now: datetime.datetime
) -> LeaseRecord | None:
    """The record to write to acquire or renew the lease; None while another holder's lease is valid.

    The caller has already checked :func:`held_by_another`; this only builds the record:
    a renewal keeps the acquire time and the transitions, a takeover counts one more transition.
    """
    if observed is None:
        return LeaseRecord(identity, lease_duration_s, now, now, 0)
    current = observed.record
    if current.holder == identity:
        return dataclasses.replace(current, lease_duration_s=lease_duration_s, renew_time=now)
    return LeaseRecord(identity, lease_duration_s, now, now, current.transitions + 1)


def released(record: LeaseRecord, now: datetime.datetime) -> LeaseRecord:
    """client-go's release: no holder, a 1 s duration, so a standby takes over on its next try."""
    return LeaseRecord("", 1, now, now, record.transitions)


Fence = Callable[[], contextlib.AbstractContextManager[bool]]
"""``with fence() as leading:``: whether this replica may write now (see :meth:`LeaseElector.fenced`)."""


@contextlib.contextmanager
def unfenced() -> Iterator[bool]:
    """The fence of an operator run without leader election: it always writes."""
    yield True


def utc_now() -> datetime.datetime:
    # Lease times are MicroTime: keep microseconds, drop nothing the API server would round away.
    return datetime.datetime.now(datetime.UTC)


class LeaseElector:
    """Acquires, renews and releases one Lease; :meth:`is_leading` is the fence of every write.

    The methods that talk to the API block (the kubernetes client is synchronous): call them from a
    worker thread. :meth:`is_leading` only reads a float and is safe from any thread.
    """

    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        timings: ElectionTimings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = utc_now,
        owner: client.V1OwnerReference | None = None,
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        # The Lease's owner (the chart: the operator's ServiceAccount): deleting it (helm uninstall)
        # has the garbage collector delete the Lease, which no release of the lease would remove.
        self.owner = owner
        self.timings = timings
        self.clock, self.wall_clock = clock, wall_clock
        self.observed: Observed | None = None
        # Monotonic time at which the last successful acquire/renew request was *sent*: the API
        # server wrote it later and a standby saw it later still, so fencing from here is safe.
        self.last_renew: float | None = None
        # Held by a fenced write while it runs: releasing the lease waits for it, so a standby that
        # takes over after a SIGTERM never writes beside the old leader's last decision.
        self.writing = threading.Lock()
        # One API exchange at a time: a renew still in flight must not follow the release and take
        # the lease back (or make the release fail its resourceVersion check).
        self.exchanging = threading.Lock()
        self.stopped = False

    def is_leading(self) -> bool:
        """True while the last successful renew is more recent than the renew deadline."""
        last = self.last_renew
        return last is not None and self.clock() - last < self.timings.renew_deadline_s

    @contextlib.contextmanager
    def fenced(self) -> Iterator[bool]:
        """``with elector.fenced() as leading:`` write only if ``leading``; release waits for the block."""
        with self.writing:
            yield self.is_leading()

    def holder(self) -> str:
        """The holder this replica last saw ('' when none or unknown)."""
        return self.observed.record.holder if self.observed else ""

    def _request_timeout(self) -> float:
        # A hung request must not outlive the renew deadline (client-go bounds it the same way).
        return max(1.0, self.timings.renew_deadline_s / 2)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the lease now. Never raises for API errors."""
        with self.exchanging:
            return not self.stopped and self._try_acquire_or_renew()

    def _try_acquire_or_renew(self) -> bool:
        sent = self.clock()
        duration = max(1, round(self.timings.lease_duration_s))
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._request_timeout())
        except ApiException as error:
            if error.status != 404:
                log.warning("reading Lease %s/%s failed: %s %s", self.namespace, self.name, error.status, error.reason)
                return False
            return self._create(sent, duration)
        except Exception as error:  # connection refused, timeout: the next retry may succeed
            log.warning("reading Lease %s/%s failed: %s", self.namespace, self.name, error)
            return False
        before = self.holder()
        self.observed = observe(self.observed, LeaseRecord.from_spec(lease.spec), _version(lease), sent)
        if self.observed.record.holder != before and self.observed.record.holder != self.identity:
            log.info("Lease %s/%s is held by %r", self.namespace, self.name, self.observed.record.holder)
        if held_by_another(self.observed, self.identity, sent):
            if self.last_renew is not None:  # someone took it (this replica stalled): stop at once
                log.error("Lease %s/%s is now held by %s", self.namespace, self.name, self.observed.record.holder)
                self.last_renew = None
            return False
        record = next_record(self.observed, self.identity, duration, self.wall_clock())
        assert record is not None  # only None without a valid other holder, checked just above
        return self._replace(lease, record, sent)

    def _create(self, sent: float, duration: int) -> bool:
        record = next_record(None, self.identity, duration, self.wall_clock())
        assert record is not None
        owners = [self.owner] if self.owner is not None else None
        metadata = client.V1ObjectMeta(name=self.name, namespace=self.namespace, owner_references=owners)
        body = client.V1Lease(metadata=metadata, spec=record.to_spec())
        try:
            created = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self._request_timeout())
        except Exception as error:  # 409: another replica created it first; anything else: retry later
            conflict = isinstance(error, ApiException) and error.status == 409
            log.log(
                logging.INFO if conflict else logging.WARNING,
                "creating Lease %s/%s failed: %s",
                self.namespace,
                self.name,
                _describe(error),
            )
            return False
        return self._won(record, _version(created), sent)

    def _replace(self, lease: client.V1Lease, record: LeaseRecord, sent: float) -> bool:
        # The read's resourceVersion travels with the body: the API server refuses (409) the write
        # if anyone changed the Lease in between, so two replicas can never both win one round.
        lease.spec = record.to_spec()
        owners = (lease.metadata.owner_references if lease.metadata else None) or []
        if self.owner is not None and lease.metadata is not None and not any(o.uid == self.owner.uid for o in owners):
            # A Lease created before it had an owner (or by a replica without one) is adopted.
            lease.metadata.owner_references = [*owners, self.owner]
        try:
            replaced = self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._request_timeout()
            )
        except Exception as error:
            log.info("updating Lease %s/%s failed: %s", self.namespace, self.name, _describe(error))
            return False
        return self._won(record, _version(replaced), sent)

    def _won(self, record: LeaseRecord, resource_version: str, sent: float) -> bool:
        self.observed = Observed(record, resource_version, sent)
        self.last_renew = sent
        return True

    def release(self) -> bool:
        """Give the lease up (on shutdown) if this replica holds it; True when released."""
        self.last_renew = None  # stop acting first, whatever the API says
        with self.exchanging:
            self.stopped = True
            self.last_renew = None  # a renew that was in flight may have reopened the fence
            # Let a write that passed the fence before finish (bounded: a hung one is left behind).
            if self.writing.acquire(timeout=self.timings.renew_deadline_s):
                self.writing.release()
            return self._release()

    def _release(self) -> bool:
        if self.observed is None or self.observed.record.holder != self.identity:
            return False
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._request_timeout())
            if LeaseRecord.from_spec(lease.spec).holder != self.identity:
                return False
            return self._replace(lease, released(self.observed.record, self.wall_clock()), self.clock())
        except Exception as error:
            log.warning("releasing Lease %s/%s failed: %s", self.namespace, self.name, _describe(error))
            return False
        finally:
            self.last_renew = None


def _version(lease: client.V1Lease) -> str:
    return (lease.metadata.resource_version if lease.metadata else None) or ""


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def lease_event(
    namespace: str, lease_name: str, identity: str, message: str, now: datetime.datetime
) -> client.CoreV1Event:
    """A core/v1 Event on the Lease (what client-go's recorder posts as 'LeaderElection')."""
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{lease_name}.", namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version="coordination.k8s.io/v1", kind="Lease", name=lease_name, namespace=namespace
        ),
        reason="LeaderElection",
        message=f"{identity} {message}",
        type="Normal",
        source=client.V1EventSource(component="edgeaigc-operator"),
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
