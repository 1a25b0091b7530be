"""Run ``edgeaigc`` subcommands as child processes (twin, operator) and stop them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def spawn_edgeaigc(arguments: list[str], log: Path, kubeconfig: Path) -> subprocess.Popen[bytes]:
    """``edgeaigc ARGUMENTS`` against ``kubeconfig``, output appended to ``log``."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeaigc.cli", *arguments], stdout=handle, stderr=subprocess.STDOUT, env=env
        )


def spawn_twin(
    namespace: str,
    cluster_dir: Path,
    log: Path,
    kubeconfig: Path,
    *,
    seed: int,
    tick_seconds: float = 1.0,
    demand: str = "traffic-city",
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``edgeaigc twin`` playing the gateways of ``namespace``'s fleet on the local cluster in ``cluster_dir``."""
    arguments = ["twin", "-n", namespace, "--tick-seconds", f"{tick_seconds:g}", "--seed", str(seed)]
    arguments += ["--demand-from", demand, "--cluster-dir", str(cluster_dir), *extra]
    return spawn_edgeaigc(arguments, log, kubeconfig)


def spawn_operator(namespace: str, log: Path, kubeconfig: Path, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``edgeaigc operator`` for ``namespace``, its metrics and liveness servers on free ports."""
    arguments = ["operator", "-n", namespace, *extra, "--metrics-port", "0", "--liveness-port", "0"]
    return spawn_edgeaigc(arguments, log, kubeconfig)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM (the children exit 0 on it), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
