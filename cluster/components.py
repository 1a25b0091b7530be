"""Pinned control-plane components, built from source through the Go module proxy and cached.

``k8s.io/kubernetes`` cannot be ``go install``-ed: its go.mod replaces the staging modules
(``k8s.io/api``, ``k8s.io/client-go``, …) with local paths. We build it from a small wrapper
module that requires it and replaces every staging module (those it requires at the exact
version ``v0.0.0``) with the published ``v0.<minor>.<patch>``. etcd's server module has local
replaces too, so it gets a wrapper as well; kwok installs directly.

Binaries are cached in ``$EDGEAIGC_CACHE`` (default ``~/.cache/edgeaigc``) under
``bin/<component>-<version>/``; the Go build cache makes rebuilds fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.10"
KWOK_VERSION = "v0.8.0"

#: kwok's own default stages used by the local cluster: nodes become Ready and keep a heartbeat;
#: pods become Ready once scheduled, complete when their job is done, and go away when deleted.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class BuildError(RuntimeError):
    """A component could not be built; the message says which and the tail of Go's output."""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEAIGC_CACHE", Path.home() / ".cache" / "edgeaigc"))


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Paths of every binary the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path

    def missing(self) -> list[Path]:
        return [path for path in dataclasses.astuple(self) if not Path(path).exists()]


def binaries() -> Binaries:
    """Where the pinned binaries are (or will be) cached."""
    kubernetes = cache_dir() / "bin" / f"kubernetes-{KUBERNETES_VERSION}"
    return Binaries(
        etcd=cache_dir() / "bin" / f"etcd-{ETCD_VERSION}" / "etcd",
        kube_apiserver=kubernetes / "kube-apiserver",
        kube_controller_manager=kubernetes / "kube-controller-manager",
        kube_scheduler=kubernetes / "kube-scheduler",
        kubectl=kubernetes / "kubectl",
        kwok=cache_dir() / "bin" / f"kwok-{KWOK_VERSION}" / "kwok",
        kwok_stages=cache_dir() / "bin" / f"kwok-{KWOK_VERSION}" / "stages.yaml",
    )


def _go_env() -> dict[str, str]:
    if shutil.which("go") is None:
        raise BuildError("`go` is not on PATH: install Go >= 1.26 to build the local control plane")
    # Never let go fetch another toolchain; keep module downloads writable.
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


def _run_go(arguments: list[str], cwd: Path, what: str) -> str:
    result = subprocess.run(["go", *arguments], cwd=cwd, env=_go_env(), capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BuildError(f"building {what} failed (go {' '.join(arguments[:2])}):\n{tail}")
    return result.stdout


def kubernetes_wrapper_go_mod(kubernetes_go_mod: str, version: str) -> str:
    """The wrapper module's go.mod: require k8s.io/kubernetes, replace its staging modules."""
    staging_version = "v0." + version.removeprefix("v1.")
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[A-Za-z0-9._/-]+) v0\.0\.0\s*$", kubernetes_go_mod, re.MULTILINE)))
    lines = ["module edgeaigc.local/kubernetes-wrapper", "", "go 1.26", "", f"require k8s.io/kubernetes {version}", ""]
    lines += [f"replace {module} => {module} {staging_version}" for module in staging]
    return "\n".join(lines) + "\n"


def _version_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        ]
    return " ".join(flags)


def build_kubernetes(out: Path, commands: tuple[str, ...], progress: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgeaigc-k8s-") as tmp:
        work = Path(tmp)
        progress(f"resolving k8s.io/kubernetes {KUBERNETES_VERSION}")
        info = json.loads(
            _run_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], work, "kubernetes")
        )
        (work / "go.mod").write_text(kubernetes_wrapper_go_mod(Path(info["GoMod"]).read_text(), KUBERNETES_VERSION))
        imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in KUBERNETES_COMMANDS)
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
        _run_go(["mod", "tidy"], work, "kubernetes (go mod tidy)")
        out.mkdir(parents=True, exist_ok=True)
        for command in commands:
            progress(f"building {command} {KUBERNETES_VERSION}")
            _run_go(
                [
                    "build",
                    "-trimpath",
                    "-ldflags",
                    _version_ldflags(KUBERNETES_VERSION),
                    "-o",
                    str(out / command),
                    f"k8s.io/kubernetes/cmd/{command}",
                ],
                work,
                command,
            )


def build_etcd(out: Path, progress: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="edgeaigc-etcd-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module edgeaigc.local/etcd-wrapper\n\ngo 1.26\n")
        (work / "tools.go").write_text('//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n')
        progress(f"building etcd {ETCD_VERSION}")
        _run_go(["get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], work, "etcd (go get)")
        _run_go(["mod", "tidy"], work, "etcd (go mod tidy)")
        out.mkdir(parents=True, exist_ok=True)
        _run_go(
            ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"],
            work,
            "etcd",
        )


def build_kwok(out: Path, progress: Callable[[str], None]) -> None:
    progress(f"building kwok {KWOK_VERSION}")
    out.mkdir(parents=True, exist_ok=True)
    env = {**_go_env(), "GOBIN": str(out)}
    result = subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"building kwok failed:\n{result.stderr.strip()[-2000:]}")
    # kwok needs Stage objects to play kubelets; its module ships defaults, which we use as is.
    module_cache = subprocess.run(["go", "env", "GOMODCACHE"], env=env, capture_output=True, text=True).stdout.strip()
    stage_root = Path(module_cache) / f"sigs.k8s.io/kwok@{KWOK_VERSION}" / "kustomize" / "stage"
    documents = [(stage_root / relative).read_text() for relative in KWOK_STAGES]
    (out / "stages.yaml").write_text("\n---\n".join(documents))


def ensure_binaries(progress: Callable[[str], None] = print) -> Binaries:
    """Build whatever pinned binary is not cached yet; return all paths."""
    paths = binaries()
    if not (paths.etcd.exists()):
        build_etcd(paths.etcd.parent, progress)
    kubernetes_dir = paths.kube_apiserver.parent
    missing_commands = tuple(c for c in KUBERNETES_COMMANDS if not (kubernetes_dir / c).exists())
    if missing_commands:
        build_kubernetes(kubernetes_dir, missing_commands, progress)
    if not (paths.kwok.exists() and paths.kwok_stages.exists()):
        build_kwok(paths.kwok.parent, progress)
    missing = paths.missing()
    if missing:
        raise BuildError(f"still missing after the build: {', '.join(map(str, missing))}")
    return paths
