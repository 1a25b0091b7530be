"""Run kopf only while this replica holds the Lease (``edgeaigc operator --leader-elect``).

A standby runs no kopf handler at all: it only tries to acquire the Lease every retry period (and
answers /healthz so the kubelet does not restart it). Once it leads, it starts kopf in standalone
mode and keeps renewing. Then:

- SIGTERM/SIGINT: kopf stops its handlers, then the lease is released so a standby takes over on
  its next try (a rolling update hands over at once) — exit 0;
- no renew within the renew deadline, or another holder seen: every write is already fenced
  (:meth:`~edgeaigc.operator.leader.LeaseElector.is_leading` is false); the process exits 1 at once
  so the kubelet restarts it as a standby (client-go's pattern);
- kopf exits by itself (a crash): the lease is released and the process exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from kubernetes import client

from edgeaigc.operator import metrics
from edgeaigc.operator.leader import LeaseElector, lease_event, utc_now

log = logging.getLogger("edgeaigc.operator.leader")

LOST_LEADERSHIP_EXIT = 1
KOPF_SHUTDOWN_S = 15.0  # kopf stops its daemons within their cancellation timeout (5 s) and its watches


def jittered(period_s: float) -> float:
    """client-go's wait.Jitter(period, 1.2): never in lockstep with the other replicas."""
    return period_s * (1 + 0.2 * random.random())


async def acquire(elector: LeaseElector, stopping: asyncio.Event) -> bool:
    """Try until this replica leads (True) or is asked to stop (False)."""
    while not stopping.is_set():
        if await asyncio.to_thread(elector.try_acquire_or_renew):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), jittered(elector.timings.retry_period_s))
    return False


async def keep_renewing(elector: LeaseElector) -> None:
    """Renew every retry period; return as soon as leadership is lost (deadline passed or taken)."""
    while True:
        await asyncio.sleep(elector.timings.retry_period_s)
        if not elector.is_leading():  # checked before the attempt too: a stalled process wakes up late
            return
        renewing = asyncio.ensure_future(asyncio.to_thread(elector.try_acquire_or_renew))
        # Never wait for a slow renew past the deadline: the fence has closed by then anyway.
        while not renewing.done():
            await asyncio.wait({renewing}, timeout=elector.timings.retry_period_s)
            if not elector.is_leading():
                return
        if not elector.is_leading():
            return


def post_event(api: client.ApiClient, elector: LeaseElector, message: str) -> None:
    """A Kubernetes event on the Lease; best effort (leadership never waits for an event)."""
    body = lease_event(elector.namespace, elector.name, elector.identity, message, utc_now())
    try:
        client.CoreV1Api(api).create_namespaced_event(elector.namespace, body, _request_timeout=5)
    except Exception as error:
        log.warning("could not post the leader election event: %s", error)


@contextlib.contextmanager
def standby_health(port: int) -> Iterator[None]:
    """/healthz on the liveness port while kopf (which serves it when leading) does not run."""
    if not port:
        yield
        return

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a probe every few seconds is not news

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Healthz)
    thread = threading.Thread(target=server.serve_forever, name="standby-healthz", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def exit_now(code: int) -> None:
    """Exit without waiting for worker threads: a decision blocked in the API must not keep a
    replica that lost the lease alive (its writes are fenced; the kubelet restarts it)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def run_elected(
    elector: LeaseElector,
    api: client.ApiClient,
    start_operator: Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]],
    liveness_port: int,
) -> int:
    """Stand by, lead with ``start_operator(stop_flag, ready_flag)``, release; the process exit code."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    metrics.LEADER.labels(elector.identity).set(0)
    log.info("%s: standing by for Lease %s/%s", elector.identity, elector.namespace, elector.name)
    with standby_health(liveness_port):
        leading = await acquire(elector, stopping)
    if not leading:
        log.info("%s: stopped while standing by", elector.identity)
        return 0
    metrics.LEADER.labels(elector.identity).set(1)
    transitions = elector.observed.record.transitions if elector.observed else 0
    log.info(
        "%s: became leader of Lease %s/%s (transitions %d)",
        elector.identity,
        elector.namespace,
        elector.name,
        transitions,
    )
    # In the background: kopf must not wait for an event (the task is awaited before exiting).
    announced = asyncio.ensure_future(asyncio.to_thread(post_event, api, elector, "became leader"))
    operator_stop, operator_ready = asyncio.Event(), asyncio.Event()
    operator = asyncio.ensure_future(start_operator(operator_stop, operator_ready))
    renewing = asyncio.ensure_future(keep_renewing(elector))
    # kopf installs its own SIGTERM/SIGINT handlers as it starts; once it is ready, signals come back
    # here so the lease is handed over while kopf winds down (its shutdown alone took 5 s here).
    signals_back = asyncio.ensure_future(take_back_signals(operator_ready, stopping))
    waiting_for_stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({operator, renewing, waiting_for_stop}, return_when=asyncio.FIRST_COMPLETED)
    if renewing.done():
        metrics.LEADER.labels(elector.identity).set(0)
        log.error(
            "%s: lost the Lease %s/%s (no renew within %.0f s, or taken by %r): exiting",
            elector.identity,
            elector.namespace,
            elector.name,
            elector.timings.renew_deadline_s,
            elector.holder(),
        )
        exit_now(LOST_LEADERSHIP_EXIT)
    operator_stop.set()
    renewing.cancel()
    metrics.LEADER.labels(elector.identity).set(0)
    # release() closes the fence first and waits for a write already past it, so the standby that
    # takes the lease next never writes beside this replica.
    released = await asyncio.to_thread(elector.release)
    log.info(
        "%s: %s the Lease %s/%s",
        elector.identity,
        "released" if released else "did not hold",
        elector.namespace,
        elector.name,
    )
    await announced
    if released:
        await asyncio.to_thread(post_event, api, elector, "released the lease")
    await asyncio.wait({operator}, timeout=KOPF_SHUTDOWN_S)
    signals_back.cancel()
    waiting_for_stop.cancel()
    if not operator.done():
        log.error("%s: kopf did not stop within %.0f s: exiting", elector.identity, KOPF_SHUTDOWN_S)
        exit_now(1)
    if not operator.cancelled() and operator.exception() is not None:
        log.error("the operator failed", exc_info=operator.exception())
        return 1
    return 0


async def take_back_signals(ready: asyncio.Event, stopping: asyncio.Event) -> None:
    await ready.wait()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
