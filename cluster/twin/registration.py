"""The twin as a scrape target of the local cluster's Prometheus: job ``edgeaigc-gateway``, like the real gateways."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from edgeaigc.cluster import prometheus as prom
from edgeaigc.cluster.local import _alive
from edgeaigc.cluster.twin.fleet_source import running_cluster

log = logging.getLogger("edgeaigc.twin")

#: Scrape job of the twin (and of the real gateways).
JOB = "edgeaigc-gateway"


def registration_dir(register: bool | None, cluster_dir: Path | None) -> Path | None:
    """The local cluster directory to register in (``--register``, ``--cluster-dir``); None: do not register.

    By default (``register`` None) the running local cluster's, when it runs Prometheus; asked to
    register (True) without one, :class:`~edgeaigc.cluster.prometheus.PrometheusError`.
    """
    if register is False:
        return None
    if cluster_dir is not None:
        return Path(cluster_dir)
    state = running_cluster()
    if state is not None and state.prometheus_url is not None and _alive(state.pids.get("prometheus", 0) or 0):
        return state.directory
    if register:
        raise prom.PrometheusError("--register: no local cluster with Prometheus is running (give --cluster-dir)")
    return None


@contextlib.contextmanager
def registered(directory: Path | None, address: str, namespace: str) -> Iterator[None]:
    """``address`` is a target of job :data:`JOB` (target label ``namespace``) while the block runs."""
    if directory is None:
        yield
        return
    try:
        prom.register_target(directory, JOB, address, {"namespace": namespace})
        log.info("registered as Prometheus target (job %s) in %s", JOB, directory)
        yield
    finally:
        prom.unregister_target(directory, JOB, address)
