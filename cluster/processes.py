"""Run ``edgeaigc`` subcommands as child processes (twin, operator) and stop them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def spawn_edgeaigc(arguments: list[str], log: Path, kubeconfig: Path) -> subprocess.Popen[bytes]:
    """``edgeaigc ARGUMENTS`` against ``kubeconfig``, output appended to ``log``."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeaigc.cli", *arguments], stdout=handle, stderr=subprocess.STDOUT, env=env
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM (the children exit 0 on it), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
