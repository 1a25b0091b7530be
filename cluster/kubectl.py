"""kubectl (built from the pinned sources, see :mod:`edgeaigc.cluster.components`) against one cluster.

The one way the demo, the benchmarks and the end-to-end tests run it: the kubeconfig passed on the
command line (never the user's ``$KUBECONFIG``), input on stdin, output captured, a time limit.
This module imports nothing of the local cluster's lifecycle, so that lifecycle can use it too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgeaigc.cluster.components import binaries

DEFAULT_TIMEOUT_S = 120.0


class KubectlFailed(RuntimeError):
    """kubectl exited with an error; the message has the arguments and what kubectl said on stderr."""


def run_kubectl(
    kubeconfig: Path,
    *arguments: str,
    stdin: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    binary: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``kubectl --kubeconfig=KUBECONFIG ARGUMENTS``, whatever its exit status (``binary``: the cached build's)."""
    return subprocess.run(
        [str(binary or binaries().kubectl), f"--kubeconfig={kubeconfig}", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def kubectl(
    kubeconfig: Path,
    *arguments: str,
    stdin: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    binary: Path | None = None,
) -> str:
    """What kubectl printed on stdout; :class:`KubectlFailed` if it exited with an error."""
    result = run_kubectl(kubeconfig, *arguments, stdin=stdin, timeout_s=timeout_s, binary=binary)
    if result.returncode != 0:
        raise KubectlFailed(f"kubectl {' '.join(arguments)} failed: {result.stderr.strip()}")
    return result.stdout
