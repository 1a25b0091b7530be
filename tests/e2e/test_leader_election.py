"""Two ``edgeaigc operator --leader-elect`` processes on the local cluster; the leader is killed repeatedly.

Real API server, scheduler, garbage collector, Prometheus, twin and fleet (as in test_operator.py).
A thread watches the Lease and records every version of it. Each round kills the leader (SIGKILL
or SIGTERM), measures from the kill until the standby holds the Lease, starts a new replica as a
kubelet would, and checks the Deployments. At the end the operators' own logs show that every
decision was made by the replica that held the Lease at the time, so no interval was decided by
two replicas. A leader frozen with SIGSTOP is taken over, then resumed: it must apply nothing
and exit 1.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch

from edgeaigc.cluster.local import ClusterState
from edgeaigc.cluster.processes import spawn_operator, spawn_twin, stop
from tests.e2e.conftest import REPO, Kubectl, example_fleet, wait_for

NAMESPACE = "ha-e2e"
POLICY = "city"
LEASE = "edgeaigc-operator"
OWNER = "ha-operator"  # the ServiceAccount that owns the Lease (the chart: the operator's)
INTERVAL_S = 5  # the CRD's minimum
CHURN_LIMIT = 2
TAKEOVER_S = 15.0  # the bound, from the kill to the standby holding the Lease
HANDOVER_S = 5.0  # after a SIGTERM: well below the 10 s lease a release saves
ACTOR = REPO / "policy" / "actors" / "traffic-city-td3.onnx"
DECISION = re.compile(r"^(\[[^\]]+\] )?(decided in |degraded \()")  # kopf may prefix [namespace/name]
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] (\S+)\s+\[[A-Z ]+\] (.*)$")


@dataclass
class Replica:
    """One operator process with a unique Lease identity and its own log."""

    identity: str
    log: Path
    process: subprocess.Popen[bytes]
    ended_at: float | None = None  # wall time after which it could not act (killed, or released)

    def lines(self) -> list[tuple[float, str]]:
        """(wall time, message) of every log line of this replica."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if match := LOG_LINE.match(line):
                stamp = datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
                found.append((stamp, match[3]))
        return found

    def first(self, needle: str) -> float | None:
        return next((stamp for stamp, message in self.lines() if needle in message), None)

    def decisions(self) -> list[float]:
        """When this replica reported a decision it had applied (or a degraded one it wrote to status)."""
        return [stamp for stamp, message in self.lines() if DECISION.match(message)]


@dataclass
class LeaseHistory:
    """Every version of the Lease, as a watch delivers them: (monotonic time, holder, transitions)."""

    api: client.CoordinationV1Api
    versions: list[tuple[float, str, int]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def follow(self) -> None:
        resource_version = None
        while not self.stopped.is_set():
            stream = watch.Watch().stream(
                self.api.list_namespaced_lease,
                NAMESPACE,
                field_selector=f"metadata.name={LEASE}",
                resource_version=resource_version,
                timeout_seconds=2,
            )
            try:
                for event in stream:
                    lease = event["object"]
                    resource_version = lease.metadata.resource_version
                    spec = lease.spec
                    self.versions.append((time.monotonic(), spec.holder_identity or "", spec.lease_transitions or 0))
            except client.exceptions.ApiException as error:
                if error.status != 410:
                    raise
                resource_version = None  # too old: list again

    def holder(self) -> str:
        return self.versions[-1][1] if self.versions else ""

    def held_by(self, identity: str, since: float) -> float | None:
        """Monotonic time the Lease was first seen held by ``identity`` after ``since``."""
        return next((t for t, holder, _ in self.versions if t >= since and holder == identity), None)


@dataclass
class Fleet:
    cluster: ClusterState
    logs: Path
    history: LeaseHistory
    replicas: list[Replica] = field(default_factory=list)

    def start(self) -> Replica:
        identity = f"replica-{len(self.replicas)}"
        log = self.logs / f"{identity}.log"
        extra = ["--leader-elect", "--leader-election-identity", identity]
        extra += ["--leader-election-owner-service-account", OWNER]
        replica = Replica(identity, log, spawn_operator(NAMESPACE, log, self.cluster.kubeconfig, extra))
        self.replicas.append(replica)
        return replica

    def by_identity(self, identity: str) -> Replica:
        return next(r for r in self.replicas if r.identity == identity)

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.process.poll() is None]


@pytest.fixture(scope="module")
def fleet(cluster: ClusterState, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if cluster.prometheus_url is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus); the operator needs it")
    logs = tmp_path_factory.mktemp("leader-election")
    kubectl.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    # LRU caches whatever is missed: the test is about who acts, not about the actor.
    documents = example_fleet(
        NAMESPACE,
        POLICY,
        intervalSeconds=INTERVAL_S,
        prometheusURL=cluster.prometheus_url,
        churnLimit=CHURN_LIMIT,
        algorithm="lru",
        actor=None,
    )
    kubectl.run("create", "namespace", NAMESPACE)
    kubectl.run("create", "serviceaccount", OWNER, "-n", NAMESPACE)
    kubectl.run("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(documents))
    twin = spawn_twin(NAMESPACE, cluster.directory, logs / "twin.log", cluster.kubeconfig, seed=0)
    history = LeaseHistory(client.CoordinationV1Api(config.new_client_from_config(str(cluster.kubeconfig))))
    follower = threading.Thread(target=history.follow, name="lease-history", daemon=True)
    follower.start()
    state = Fleet(cluster, logs, history)
    try:
        yield state
    finally:
        for replica in state.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)
                stop(replica.process)
        stop(twin)
        history.stopped.set()
        follower.join(10)
        # Give the kwok nodes' capacity back to the next modules of the session (the chart's gateways):
        # no operator runs any more, so the policy's finalizer is removed here.
        finalizers = json.dumps({"metadata": {"finalizers": None}})
        kubectl.run("patch", "pp", POLICY, "-n", NAMESPACE, "--type=merge", "-p", finalizers, check=False)
        kubectl.run("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
        for replica in state.replicas:
            print(f"--- {replica.identity} ---\n{replica.log.read_text()[-2500:]}")


def _edge_deployments(kubectl: Kubectl) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component=edge-inference,edgeaigc.io/policy={POLICY}"
    return json.loads(kubectl.run("get", "deploy", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)["items"]


def _placed(kubectl: Kubectl) -> dict[tuple[str, str], str]:
    """(edge node, model) -> uid of its Deployment; fails on a duplicate or a Deployment without its owner."""
    found: dict[tuple[str, str], str] = {}
    for deployment in _edge_deployments(kubectl):
        labels = deployment["metadata"]["labels"]
        pair = (labels["edgeaigc.io/edge-node"], labels["edgeaigc.io/model"])
        assert pair not in found, f"two Deployments for {pair}"
        owners = [(o["kind"], o["name"]) for o in deployment["metadata"].get("ownerReferences", [])]
        assert ("PlacementPolicy", POLICY) in owners, f"{deployment['metadata']['name']} is orphaned: {owners}"
        found[pair] = deployment["metadata"]["uid"]
    return found


def _leader(fleet: Fleet) -> tuple[Replica, Replica]:
    """The leading replica and a standby that is up and has seen the leader (so its start is not measured)."""
    holder = wait_for(fleet.history.holder, 30, "a holder of the Lease")
    leader = fleet.by_identity(holder)
    standby = next(r for r in fleet.alive() if r is not leader)
    wait_for(lambda: standby.first("is held by"), 30, f"{standby.identity} to stand by")
    return leader, standby


def _after_takeover(fleet: Fleet, leader: Replica, standby: Replica, killed_at: float) -> float:
    """Seconds from the kill to the standby holding the Lease; then the new leader's first decision."""
    acquired = wait_for(lambda: fleet.history.held_by(standby.identity, killed_at), 30, f"{standby.identity} to lead")
    leader.process.wait(20)
    fleet.start()  # the kubelet's restart: the next standby
    became = standby.first("became leader")
    assert became is not None
    wait_for(lambda: [t for t in standby.decisions() if t >= became], 4 * INTERVAL_S + 20, "the new leader to decide")
    return acquired - killed_at


def test_the_standby_takes_over_within_15_s_each_time_and_never_acts_beside_the_leader(
    fleet: Fleet, kubectl: Kubectl
) -> None:
    first = fleet.start()
    wait_for(lambda: fleet.history.holder() == first.identity, 60, "the first replica to lead")
    fleet.start()
    wait_for(lambda: _edge_deployments(kubectl), 120, "edge Deployments placed by the leader")
    takeovers: list[float] = []
    for how in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
        leader, standby = _leader(fleet)
        before = _placed(kubectl)
        killed_at, killed_wall = time.monotonic(), time.time()
        leader.ended_at = killed_wall
        leader.process.send_signal(how)
        takeovers.append(_after_takeover(fleet, leader, standby, killed_at))
        # A SIGTERM is a clean hand-over: exit 0 after releasing the Lease (its log says when).
        if how == signal.SIGTERM:
            assert leader.process.returncode == 0
            # Released, not left to expire: the standby takes it on its next try (--retry-period 1).
            assert takeovers[-1] < HANDOVER_S, f"a SIGTERM hand-over took {takeovers[-1]:.1f} s"
            leader.ended_at = leader.first("released the Lease")
        else:
            assert leader.process.returncode == -signal.SIGKILL
        # The new leader continues from the cluster's placement: what it keeps is the same Deployments
        # (not recreated), and it does not start over (LRU may still move up to churnLimit models per
        # node per decision, so only the kept part is compared).
        after = _placed(kubectl)
        kept = before.keys() & after.keys()
        assert kept, f"the placement was kept across the takeover: {sorted(before)} -> {sorted(after)}"
        assert all(before[pair] == after[pair] for pair in kept), "a kept model's Deployment was recreated"
        first_decision = min(t for t in standby.decisions() if t >= killed_wall) - killed_wall
        handover = f"{how.name}: {leader.identity} -> {standby.identity}"
        print(f"{handover} leads after {takeovers[-1]:.1f} s, decides after {first_decision:.1f} s")
    print(f"takeover s: min {min(takeovers):.1f} median {statistics.median(takeovers):.1f} max {max(takeovers):.1f}")
    assert max(takeovers) < TAKEOVER_S, takeovers
    _assert_one_actor_at_a_time(fleet)


def _assert_one_actor_at_a_time(fleet: Fleet) -> None:
    """From the Lease's history and the replicas' own logs."""
    holders = [(holder, transitions) for _, holder, transitions in fleet.history.versions]
    changes = [h for i, h in enumerate(holders) if h[0] and (i == 0 or h[0] != holders[i - 1][0])]
    # Each new holder counts exactly one more transition: nobody took the Lease without the others seeing it.
    assert [t for _, t in changes] == list(range(changes[0][1], changes[0][1] + len(changes))), holders
    windows = []
    for replica in fleet.replicas:
        became = replica.first("became leader")
        decisions = replica.decisions()
        if became is None:
            assert not decisions, f"{replica.identity} decided without ever leading"
            continue
        end = replica.ended_at if replica.ended_at is not None else time.time()
        late = [t for t in decisions if not became <= t <= end]
        assert not late, f"{replica.identity} decided outside its leadership [{became}, {end}]: {late}"
        windows.append((became, end, replica.identity))
    windows.sort()
    for (_, end, identity), (start, _, successor) in itertools.pairwise(windows):
        assert end <= start, f"{identity} could still act when {successor} began"


def test_a_stalled_leader_is_taken_over_applies_nothing_when_it_resumes_and_exits_1(
    fleet: Fleet, kubectl: Kubectl
) -> None:
    if len(fleet.alive()) < 2:  # run alone: start the pair here
        fleet.start()
        fleet.start()
    leader, standby = _leader(fleet)
    wait_for(lambda: leader.decisions(), 4 * INTERVAL_S + 20, f"{leader.identity} to decide")
    # SIGSTOP freezes the leader mid-interval, like a long GC pause or a partition from the API server.
    stopped_at, leader.ended_at = time.monotonic(), time.time()
    leader.process.send_signal(signal.SIGSTOP)
    try:
        acquired = wait_for(lambda: fleet.history.held_by(standby.identity, stopped_at), 30, "the takeover")
        became = wait_for(lambda: standby.first("became leader"), 10, "the new leader's log")
        wait_for(lambda: [t for t in standby.decisions() if t >= became], 4 * INTERVAL_S + 20, "a new decision")
    finally:
        leader.process.send_signal(signal.SIGCONT)
    # Resumed past its renew deadline, the old leader fences its writes, says so, and exits 1.
    assert leader.process.wait(15) == 1
    assert leader.first("lost the Lease") is not None
    assert not [t for t in leader.decisions() if t > leader.ended_at], "the stalled leader applied after resuming"
    print(f"stalled leader taken over in {acquired - stopped_at:.1f} s")
    assert acquired - stopped_at < TAKEOVER_S
    _placed(kubectl)  # no duplicate or orphaned Deployment
    _assert_one_actor_at_a_time(fleet)


def test_the_lease_is_deleted_with_its_owner(fleet: Fleet, kubectl: Kubectl) -> None:
    """helm uninstall deletes the operator's ServiceAccount; the garbage collector then deletes the Lease."""
    if not fleet.replicas:  # run alone
        fleet.start()
    wait_for(fleet.history.holder, 60, "a holder of the Lease")
    lease = json.loads(kubectl.run("get", "lease", LEASE, "-n", NAMESPACE, "-o", "json").stdout)
    account = json.loads(kubectl.run("get", "serviceaccount", OWNER, "-n", NAMESPACE, "-o", "json").stdout)
    owners = [(o["kind"], o["name"], o["uid"]) for o in lease["metadata"].get("ownerReferences", [])]
    assert owners == [("ServiceAccount", OWNER, account["metadata"]["uid"])]
    for replica in fleet.alive():  # the release's pods go first (they would recreate the Lease)
        stop(replica.process)
        replica.ended_at = time.time()
    kubectl.run("delete", "serviceaccount", OWNER, "-n", NAMESPACE)
    gone = kubectl.run("get", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found", "-o", "name").stdout
    wait_for(
        lambda: not kubectl.run("get", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found", "-o", "name").stdout,
        60,
        f"the garbage collector to delete the Lease (still there: {gone!r})",
    )
