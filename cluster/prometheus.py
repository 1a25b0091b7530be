"""Prometheus for the local cluster: Debian's binary as one more process, targets registered by file.

Everything lives under ``<cluster dir>/prometheus/``: ``prometheus.yml`` (written at start),
``data/`` (the TSDB) and ``targets/``. The configuration scrapes Prometheus itself and every
target listed in ``targets/*.json`` (``file_sd_configs``), so a process that wants to be scraped
— the traffic twin, a gateway run by hand — writes a file there with :func:`register_target`
and removes it with :func:`unregister_target`; Prometheus notices within a second (it watches
the folder, and re-reads it every ``refresh_interval`` as a fallback). A target's ``job`` label
comes from its file, not from the scrape configuration.

The scrape interval defaults to 5 s: the operator decides every few tens of seconds and reads
rates over windows of several scrapes. Rules are evaluated at the same interval: the chart's
recording rules (``charts/edgeaigc/files/prometheus-rules.yaml``, copied to ``rules/`` at start) are
what the operator's observer queries, as with a Prometheus the chart configures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SCRAPE_INTERVAL_S = 5.0
#: Where Debian's ``prometheus`` package puts the binary; ``$EDGEAIGC_PROMETHEUS`` overrides it.
DEBIAN_BINARY = Path("/usr/bin/prometheus")
INSTALL_HINT = "install Debian's package (apt-get install -y prometheus) or set EDGEAIGC_PROMETHEUS"
#: Job of Prometheus scraping itself.
SELF_JOB = "prometheus"
#: Scrape job of the file-registered targets (each file sets its own ``job`` label).
FILE_SD_JOB = "edgeaigc"

#: The chart's recording rules, the one copy of them (the Helm chart ships the same file).
RULES_FILE = Path(__file__).resolve().parents[1] / "charts" / "edgeaigc" / "files" / "prometheus-rules.yaml"

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PrometheusError(RuntimeError):
    """Prometheus could not be found, configured or queried; the message says why."""


def binary() -> Path | None:
    """The Prometheus binary to run, or None if there is none."""
    configured = os.environ.get("EDGEAIGC_PROMETHEUS")
    if configured:
        return Path(configured) if Path(configured).exists() else None
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.exists() else None


def prometheus_dir(cluster_dir: Path) -> Path:
    return Path(cluster_dir) / "prometheus"


def targets_dir(cluster_dir: Path) -> Path:
    return prometheus_dir(cluster_dir) / "targets"


def duration(seconds: float) -> str:
    """A Prometheus duration (``5s``, ``500ms``) for a number of seconds."""
    milliseconds = round(seconds * 1000)
    if milliseconds <= 0:
        raise PrometheusError(f"a scrape interval must be positive, got {seconds} s")
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def rules_dir(cluster_dir: Path) -> Path:
    return prometheus_dir(cluster_dir) / "rules"


def config(cluster_dir: Path, port: int, scrape_interval_s: float, listen_address: str = "127.0.0.1") -> dict[str, Any]:
    """The configuration document: Prometheus itself plus every file in ``targets/`` (the pods of
    real nodes among them: see :mod:`.pod_targets`), and the rule files of ``rules/``."""
    interval = duration(scrape_interval_s)
    return {
        # The timeout may not exceed the interval (Prometheus refuses the configuration).
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_dir(cluster_dir) / "*.yaml")],
        "scrape_configs": [
            {"job_name": SELF_JOB, "static_configs": [{"targets": [f"{listen_address}:{port}"]}]},
            {
                "job_name": FILE_SD_JOB,
                "file_sd_configs": [{"files": [str(targets_dir(cluster_dir) / "*.json")], "refresh_interval": "5s"}],
            },
        ],
    }


def prepare(
    cluster_dir: Path,
    port: int,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    *,
    listen_address: str = "127.0.0.1",
) -> list[str]:
    """Write the configuration and folders; return the command line that starts Prometheus.

    Args:
        listen_address: where it listens (the host's address on the cluster's network when pods —
            the operator — must reach it).
    """
    executable = binary()
    if executable is None:
        raise PrometheusError(f"no prometheus binary found: {INSTALL_HINT}")
    root = prometheus_dir(cluster_dir)
    targets_dir(cluster_dir).mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    if not RULES_FILE.exists():
        raise PrometheusError(f"{RULES_FILE} not found: run the local cluster from a source checkout")
    rules_dir(cluster_dir).mkdir(exist_ok=True)
    shutil.copyfile(RULES_FILE, rules_dir(cluster_dir) / "edgeaigc.yaml")
    config_file = root / "prometheus.yml"
    config_file.write_text(
        yaml.safe_dump(config(cluster_dir, port, scrape_interval_s, listen_address), sort_keys=False)
    )
    return [
        str(executable),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={root / 'data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={listen_address}:{port}",
        "--log.level=warn",
    ]


def _target_file(cluster_dir: Path, job: str, address: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{job}_{address}")
    return targets_dir(cluster_dir) / f"{stem}.json"


def register_target(cluster_dir: Path, job: str, address: str, labels: Mapping[str, str] | None = None) -> Path:
    """Ask the cluster's Prometheus to scrape ``http://<address>/metrics`` as job ``job``.

    Args:
        cluster_dir: the local cluster's directory (``ClusterState.directory``).
        job: value of the ``job`` label of everything scraped from the target.
        address: ``host:port``.
        labels: more target labels (attached to every series scraped from it).

    Returns:
        The target file (written atomically; remove it with :func:`unregister_target`).
    """
    extra = dict(labels or {})
    for name in extra:
        if not _LABEL_NAME.match(name) or name.startswith("__") or name == "job":
            raise PrometheusError(f"{name!r} is not a label a target may set")
    if not re.match(r"^[^:/\s]+:\d+$", address):
        raise PrometheusError(f"target address must be host:port, got {address!r}")
    path = _target_file(cluster_dir, job, address)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = [{"targets": [address], "labels": {"job": job, **{k: str(v) for k, v in extra.items()}}}]
    # A dot-file does not match *.json, so Prometheus never reads a half-written file.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(path)
    return path


def unregister_target(cluster_dir: Path, job: str, address: str) -> bool:
    """Stop scraping a target registered with :func:`register_target`; False if it was not registered."""
    path = _target_file(cluster_dir, job, address)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def query(url: str, promql: str, at: float | None = None, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Evaluate an instant query through the HTTP API; return the ``result`` list (vector results).

    Args:
        url: Prometheus base URL (``ClusterState.prometheus_url``).
        promql: the expression.
        at: evaluation time (Unix seconds); now when None.
    """
    parameters = {"query": promql}
    if at is not None:
        parameters["time"] = f"{at:.3f}"
    request_url = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(parameters)}"
    try:
        with urllib.request.urlopen(request_url, timeout=timeout_s) as response:
            document = json.loads(response.read())
    except (OSError, ValueError) as error:
        raise PrometheusError(f"query {promql!r} at {url} failed: {error}") from error
    if document.get("status") != "success":
        raise PrometheusError(f"query {promql!r} failed: {document.get('error', document)}")
    result = document["data"]["result"]
    if document["data"]["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return list(result)
