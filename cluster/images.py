"""``edgeaigc images build|list|export``: the project's container images, built on this machine.

Our machines have no Docker engine and no registry, so nothing can pull ``python:*-slim``.
The images are built from Debian's packages instead, with the repository's Dockerfiles kept as
the one recipe (Docker users run them with ``make images``):

1. **Base** ``localhost/edgeaigc/python:3.11-bookworm-<arch>``: ``debootstrap`` of Debian
   bookworm with python3, then a virtual environment *at* ``/usr/local``. That gives the
   python:*-slim layout the Dockerfiles rely on: ``python`` is ``/usr/local/bin/python`` and
   ``pip install --prefix=/install`` writes ``/install/lib/python3.11/site-packages`` (Debian's
   own python would write ``/install/local/lib/python3.11/dist-packages``, which the
   Dockerfiles' ``COPY --from=build /install /usr/local`` would put in the wrong place).
2. **inference**, **operator**: ``buildah bud`` of ``images/<name>.Dockerfile`` with
   ``--build-arg PYTHON_IMAGE=<base>``.
3. **pause**: ``images/pause.c``, compiled static, alone in an image (the pod sandbox image).

Other architectures (arm64, the Raspberry Pi) go through qemu-user binfmt emulation.

Each image is cached by a hash of what goes into it (the Dockerfile, the files its ``COPY``
lines name, the base's hash, the architecture); the hash is a label of the stored image, so a
second build with nothing changed only compares hashes. Images live in buildah's storage as
``localhost/edgeaigc/<name>:local-<arch>``; :func:`ensure_images` also exports each as an
``oci-archive`` whose reference is :func:`image_ref` (``localhost/edgeaigc/<name>:local``), for
``ctr -n k8s.io images import``.

Exit codes: 0 built (or cached), 1 a build failed (the tail of its log is printed) or a tool is
missing, 2 bad usage.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from edgeaigc.cluster.components import cache_dir

Progress = Callable[[str], None]

#: The checkout the Dockerfiles and their build context come from.
REPO = Path(__file__).resolve().parents[1]
PREFIX = "localhost/edgeaigc"
#: What ``edgeaigc images build`` builds (the base is built when one of the first two needs it).
IMAGES = ("inference", "operator", "pause")
DOCKERFILE_IMAGES = ("inference", "operator")
ARCHS = ("amd64", "arm64")
#: Bumped whenever the build steps below change, so every cached image is rebuilt once.
BUILDER_VERSION = "1"
#: Label of every image built here: the hash of its inputs (the cache key).
HASH_LABEL = "org.edgeaigc.input-hash"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Run in the base's root file system (in emulation for a foreign architecture). The venv at
#: /usr/local is what makes the Dockerfiles' --prefix=/install layout right (module docstring);
#: the rest only removes what no container reads (apt's lists and downloaded packages, docs).
BASE_SETUP = """set -eu
python3 -m venv /usr/local
rm -f /usr/local/bin/activate /usr/local/bin/activate.csh /usr/local/bin/activate.fish /usr/local/bin/Activate.ps1
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
find /var/log -type f -delete
"""
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

PAUSE_SOURCE = REPO / "images" / "pause.c"
PAUSE_FLAGS = ("-static", "-O2", "-s", "-Wall", "-Wextra", "-Werror")
#: The pause process runs as this user, like the upstream pause image.
PAUSE_USER = "65535:65535"
#: C compilers for a pause binary of a foreign architecture (Debian: apt-get install gcc-aarch64-linux-gnu).
CROSS_COMPILERS = {"amd64": "x86_64-linux-gnu-gcc", "arm64": "aarch64-linux-gnu-gcc"}
QEMU_BINFMT = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
#: The proxy in front of our machines intercepts TLS with a CA only the host trusts: pip in a RUN
#: step sees it through this read-only bind mount (never copied into an image).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Lines of a failed build's output printed with the error.
LOG_TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which and ends with the tail of the log."""


def image_ref(name: str) -> str:
    """The reference an image has once imported into containerd: ``localhost/edgeaigc/<name>:local``."""
    return f"{PREFIX}/{name}:local"


def stored_ref(name: str, arch: str) -> str:
    """The image's reference in buildah's storage, one per architecture."""
    return f"{PREFIX}/{name}:local-{arch}"


def base_ref(arch: str) -> str:
    """The Debian base with Python 3.11 (what the Dockerfiles' PYTHON_IMAGE is set to)."""
    return f"{PREFIX}/python:3.11-{SUITE}-{arch}"


def host_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def images_dir() -> Path:
    """Where exported archives (and the work directories of base builds) are kept."""
    return cache_dir() / "images"


# ---------------------------------------------------------------------------------------------
# Cache keys


def _digest(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        # Length-prefixed, so that moving bytes from one part to the next changes the hash.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def base_hash(arch: str) -> str:
    return _digest([BUILDER_VERSION, "base", SUITE, MIRROR, *BASE_PACKAGES, arch, BASE_SETUP, json.dumps(BASE_ENV)])


def dockerfile(name: str) -> Path:
    return REPO / "images" / f"{name}.Dockerfile"


def copied_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths the Dockerfile's ``COPY`` lines name (not ``COPY --from=stage``)."""
    sources: list[str] = []
    for line in dockerfile_text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            sources += [word for word in words[1:-1] if not word.startswith("--")]
    return sources


def _context_files(source: str) -> list[Path]:
    path = REPO / source
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImageBuildError(f"{source}, copied by a Dockerfile, is not in {REPO}")
    # Bytecode caches and build metadata are copied by buildah but never installed (pip builds a
    # wheel of the sources), so they must not change the hash.
    return sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and "__pycache__" not in file.parts
        and not any(part.endswith(".egg-info") for part in file.parts)
        and file.suffix != ".pyc"
    )


def dockerfile_image_hash(name: str, arch: str) -> str:
    text = dockerfile(name).read_text()
    parts: list[bytes | str] = [BUILDER_VERSION, name, arch, base_hash(arch), text]
    for source in copied_sources(text):
        for file in _context_files(source):
            parts += [str(file.relative_to(REPO)), str(file.stat().st_mode & 0o111), file.read_bytes()]
    return _digest(parts)


def pause_hash(arch: str) -> str:
    return _digest([BUILDER_VERSION, "pause", arch, PAUSE_SOURCE.read_bytes(), *PAUSE_FLAGS, PAUSE_USER])


def input_hash(name: str, arch: str) -> str:
    """The cache key of image ``name`` for ``arch``: what goes into it, hashed."""
    if name == "pause":
        return pause_hash(arch)
    if name in DOCKERFILE_IMAGES:
        return dockerfile_image_hash(name, arch)
    raise ValueError(f"unknown image {name!r} (known: {', '.join(IMAGES)})")


# ---------------------------------------------------------------------------------------------
# Running the tools


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageBuildError(f"`{tool}` is not installed (Debian: apt-get install {package})")
    return path


def _buildah(*arguments: str) -> str:
    """A short buildah command's output; raises with its error on failure."""
    result = subprocess.run([_require("buildah", "buildah"), *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageBuildError(f"buildah {' '.join(arguments[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


#: Lines of buildah's output that say where a build is.
BUILDAH_STEPS = ("STEP ", "COMMIT ")
#: debootstrap's stages (not its line per package).
DEBOOTSTRAP_STEPS = ("I: Checking", "I: Found", "I: Installing", "I: Base system")


def _stream(
    command: Sequence[str | Path],
    what: str,
    progress: Progress,
    *,
    steps: tuple[str, ...] = BUILDAH_STEPS,
    env: dict[str, str] | None = None,
) -> None:
    """Run a long build step: lines starting with ``steps`` go to ``progress``, its output's tail into the error."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    # nice: the machine is shared, and a build would otherwise take both cores from the tests.
    with subprocess.Popen(
        ["nice", "-n", "5", *map(str, command)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            # A multi-stage build says "[1/2] STEP 3/9: ...".
            if steps and re.sub(r"^\[\d+/\d+\] ", "", line).startswith(steps):
                progress(f"{what}: {line}")
    if process.returncode != 0:
        raise ImageBuildError(f"{what} failed (exit {process.returncode}); last lines:\n" + "\n".join(tail))


def stored_hash(ref: str) -> str | None:
    """The input hash an image in buildah's storage was built from (None: no such image)."""
    result = subprocess.run(
        [
            "buildah",
            "inspect",
            "--type",
            "image",
            "--format",
            f'{{{{index .OCIv1.Config.Labels "{HASH_LABEL}"}}}}',
            ref,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _image_id(ref: str) -> str | None:
    result = subprocess.run(["buildah", "images", "--quiet", "--no-trunc", ref], capture_output=True, text=True)
    return result.stdout.split()[0] if result.returncode == 0 and result.stdout.split() else None


def _drop_replaced(old_id: str | None, ref: str) -> None:
    """Remove the image a rebuild untagged, so that rebuilds do not fill the disk.

    buildah refuses while a container still runs from it (a test's server, a real node's pod): such
    images are noted and removed by a later build.
    """
    noted = images_dir() / "replaced-images"
    pending = set(noted.read_text().split()) if noted.is_file() else set()
    if old_id is not None and old_id != _image_id(ref):
        pending.add(old_id)
    still_used = {
        image for image in sorted(pending) if subprocess.run(["buildah", "rmi", image], capture_output=True).returncode
    }
    # An image that is gone for another reason also fails rmi; keep only those buildah still has.
    still_used = {image for image in still_used if _image_id(image) is not None}
    noted.write_text("".join(f"{image}\n" for image in sorted(still_used)))


def ensure_binfmt(arch: str) -> None:
    """Let this machine run ``arch`` binaries through qemu-user (no-op for the host's architecture).

    The registration must have the F flag (Debian's qemu-user-static sets it): the kernel then
    opens the emulator once, so it also runs binaries inside a chroot or container that does not
    contain it.
    """
    if arch == host_arch():
        return
    if arch not in QEMU_BINFMT:
        raise ImageBuildError(f"no emulator known for {arch}")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False, capture_output=True)
    entry = binfmt / QEMU_BINFMT[arch]
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        _require("update-binfmts", "binfmt-support")
        _require(f"{QEMU_BINFMT[arch]}-static", "qemu-user-static")
        result = subprocess.run(["update-binfmts", "--enable", QEMU_BINFMT[arch]], capture_output=True, text=True)
        if result.returncode != 0 or not entry.exists():
            raise ImageBuildError(f"cannot register {QEMU_BINFMT[arch]} with binfmt_misc: {result.stderr.strip()}")
    flags = next((line.split()[1] for line in entry.read_text().splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        raise ImageBuildError(f"{entry} lacks the F flag (flags: {flags!r}); builds in a chroot could not find qemu")


# ---------------------------------------------------------------------------------------------
# The three kinds of image


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[1].startswith(prefix)]


def _remove_tree(path: Path) -> None:
    # A failed debootstrap can leave /proc or /sys mounted inside: never delete through a mount.
    for mount_point in sorted(_mounts_under(path), reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _from_rootfs(rootfs: Path, arch: str, ref: str, key: str, config: Sequence[str]) -> None:
    """Commit the files of ``rootfs`` as one layer of a new image ``ref``."""
    container = _buildah("from", "--quiet", "scratch")
    try:
        mount_point = _buildah("mount", container)
        copied = subprocess.run(["cp", "-a", f"{rootfs}/.", mount_point], capture_output=True, text=True)
        _buildah("umount", container)
        if copied.returncode != 0:
            raise ImageBuildError(f"copying {rootfs} into an image failed: {copied.stderr.strip()}")
        _buildah("config", "--os", "linux", "--arch", arch, "--label", f"{HASH_LABEL}={key}", *config, container)
        _buildah("commit", "--quiet", container, ref)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)


def build_base(arch: str, progress: Progress) -> None:
    """debootstrap + :data:`BASE_SETUP` -> :func:`base_ref` (a few minutes; under emulation longer)."""
    ensure_binfmt(arch)
    debootstrap = _require("debootstrap", "debootstrap")
    images_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"base-{arch}-", dir=images_dir()))
    rootfs = work / "rootfs"
    try:
        progress(f"base/{arch}: debootstrap {SUITE} ({', '.join(BASE_PACKAGES)})")
        packages = ",".join(BASE_PACKAGES)
        command: list[str | Path] = [
            debootstrap,
            "--variant=minbase",
            f"--arch={arch}",
            f"--include={packages}",
            SUITE,
            rootfs,
            MIRROR,
        ]
        _stream(command, f"base/{arch} debootstrap", progress, steps=DEBOOTSTRAP_STEPS)
        progress(f"base/{arch}: a venv at /usr/local, slimmed")
        # A clean environment: the host's PIP_* settings and paths mean nothing inside.
        _stream(["chroot", rootfs, "/bin/sh", "-c", BASE_SETUP], f"base/{arch} setup", progress, steps=(), env=BASE_ENV)
        # Device nodes come from the runtime, never from an image.
        for device in (rootfs / "dev").iterdir():
            if device.is_dir() and not device.is_symlink():
                shutil.rmtree(device)
            else:
                device.unlink()
        config = [f"--env={name}={value}" for name, value in BASE_ENV.items()] + ["--cmd", "python3"]
        _from_rootfs(rootfs, arch, base_ref(arch), base_hash(arch), config)
    finally:
        _remove_tree(work)


#: A RUN step's failure that is the runtime's, not the build's: worth one more try.
TRANSIENT_BUILD_ERROR = "sealing memfd copy: Device or resource busy"


def build_dockerfile_image(name: str, arch: str, key: str, progress: Progress) -> None:
    """``buildah bud`` of ``images/<name>.Dockerfile`` on this machine's base image."""
    ensure_binfmt(arch)
    command: list[str | Path] = [_require("buildah", "buildah"), "bud", "--isolation", "chroot", "--network", "host"]
    command += ["--platform", f"linux/{arch}", "--pull=never", "--layers=false"]
    command += ["--build-arg", f"PYTHON_IMAGE={base_ref(arch)}", "--label", f"{HASH_LABEL}={key}"]
    if HOST_CA_BUNDLE.is_file():
        command += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    command += ["--file", dockerfile(name), "--tag", stored_ref(name, arch), REPO]
    try:
        _stream(command, f"{name}/{arch}", progress)
    except ImageBuildError as error:
        if TRANSIENT_BUILD_ERROR not in str(error):
            raise
        # Seen once on this machine (buildah's chroot isolation re-executing itself from a sealed memfd copy
        # got EBUSY); the same build passed when run again at once.
        progress(f"{name}/{arch}: {TRANSIENT_BUILD_ERROR!r}; building once more")
        _stream(command, f"{name}/{arch}", progress)


def build_pause(arch: str, key: str, progress: Progress) -> None:
    """A static ``images/pause.c`` as the only file (and entrypoint) of an image."""
    compiler = "gcc" if arch == host_arch() else CROSS_COMPILERS[arch]
    _require(compiler, "gcc" if compiler == "gcc" else f"gcc-{compiler.removesuffix('-gcc')}")
    work = Path(tempfile.mkdtemp(prefix=f"pause-{arch}-"))
    try:
        (work / "rootfs").mkdir()
        binary = work / "rootfs" / "pause"
        progress(f"pause/{arch}: {compiler} {' '.join(PAUSE_FLAGS)} {PAUSE_SOURCE.name}")
        compiled = subprocess.run([compiler, *PAUSE_FLAGS, "-o", str(binary), str(PAUSE_SOURCE)], capture_output=True)
        if compiled.returncode != 0:
            raise ImageBuildError(f"compiling {PAUSE_SOURCE} failed:\n{compiled.stderr.decode(errors='replace')}")
        config = ["--entrypoint", '["/pause"]', "--cmd", "", "--user", PAUSE_USER]
        _from_rootfs(work / "rootfs", arch, stored_ref("pause", arch), key, config)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Build, cache, export


def archive_path(name: str, arch: str, key: str) -> Path:
    return images_dir() / f"{name}-{arch}-{key[:16]}.tar"


def export_archive(name: str, arch: str, key: str, progress: Progress) -> Path:
    """The stored image as an ``oci-archive`` whose reference is :func:`image_ref` (written once per hash)."""
    archive = archive_path(name, arch, key)
    if archive.is_file():
        return archive
    progress(f"{name}/{arch}: exporting {archive.name}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _buildah("push", "--quiet", stored_ref(name, arch), f"oci-archive:{partial}:{image_ref(name)}")
    partial.rename(archive)
    for older in archive.parent.glob(f"{name}-{arch}-*.tar"):
        if older != archive:
            older.unlink()
    return archive


@contextlib.contextmanager
def _locked(what: str) -> Iterator[None]:
    """One build of ``what`` at a time on this machine (the real-node cluster and the tests both call
    :func:`ensure_images`): a second caller waits, then finds the image cached."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with (images_dir() / f".{what}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _ensure_base(arch: str, progress: Progress) -> None:
    with _locked(f"base-{arch}"):
        if stored_hash(base_ref(arch)) == base_hash(arch):
            return
        started = time.monotonic()
        old_base = _image_id(base_ref(arch))
        build_base(arch, progress)
        _drop_replaced(old_base, base_ref(arch))
        progress(f"base/{arch}: built in {time.monotonic() - started:.0f} s")


def ensure_image(name: str, arch: str, progress: Progress) -> str:
    """Build ``name`` for ``arch`` unless the stored image has the same input hash; returns the hash."""
    key = input_hash(name, arch)
    ref = stored_ref(name, arch)
    if stored_hash(ref) == key:
        progress(f"{name}/{arch}: cached ({key[:12]})")
        return key
    if name in DOCKERFILE_IMAGES:
        _ensure_base(arch, progress)
    started = time.monotonic()
    old_id = _image_id(ref)
    if name == "pause":
        build_pause(arch, key, progress)
    else:
        build_dockerfile_image(name, arch, key, progress)
    _drop_replaced(old_id, ref)
    progress(f"{name}/{arch}: built in {time.monotonic() - started:.0f} s ({key[:12]})")
    return key


def ensure_images(
    names: Sequence[str] = IMAGES, archs: Sequence[str] = (host_arch(),), progress: Progress = print
) -> dict[tuple[str, str], Path]:
    """Build what is not cached, export each image; ``(name, arch) -> oci-archive`` for ``ctr images import``."""
    archives: dict[tuple[str, str], Path] = {}
    for arch in archs:
        for name in names:
            with _locked(f"{name}-{arch}"):
                key = ensure_image(name, arch, progress)
                archives[(name, arch)] = export_archive(name, arch, key, progress)
    return archives


def export_image(name: str, arch: str, progress: Progress = print) -> Path:
    """``~/.cache/edgeaigc/images/<name>-<arch>-<hash>.tar`` (built first if needed), reference :func:`image_ref`."""
    return ensure_images([name], [arch], progress)[(name, arch)]


def stored_images() -> list[dict[str, str]]:
    """Every ``localhost/edgeaigc/*`` image in buildah's storage: reference, size (as buildah says it), input hash."""
    listing = json.loads(_buildah("images", "--json") or "[]")
    found = [
        {"ref": ref, "size": str(image.get("size", "?")), "hash": stored_hash(ref) or ""}
        for image in listing
        for ref in image.get("names") or []
        if ref.startswith(f"{PREFIX}/")
    ]
    return sorted(found, key=lambda image: image["ref"])


# ---------------------------------------------------------------------------------------------
# Command line


def _choices(known: Sequence[str], prefix: str = "") -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if not value.startswith(prefix) or value.removeprefix(prefix) not in known]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{', '.join(unknown) or 'nothing'} not among {', '.join(prefix + value for value in known)}"
            )
        return [value.removeprefix(prefix) for value in values]

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build", allow_abbrev=False, help="build (or find cached) images and export them as OCI archives"
    )
    export = actions.add_parser(
        "export", allow_abbrev=False, help="print the OCI archive of one image (built first if needed)"
    )
    for sub in (build, export):
        sub.add_argument(
            "--platform",
            type=_choices(ARCHS, "linux/"),
            default=[host_arch()],
            metavar="PLATFORMS",
            help=f"comma-separated, e.g. linux/amd64,linux/arm64 (default: linux/{host_arch()})",
        )
    build.add_argument(
        "--image",
        type=_choices(IMAGES),
        default=list(IMAGES),
        metavar="NAMES",
        help=f"comma-separated (default: {','.join(IMAGES)})",
    )
    export.add_argument("name", choices=IMAGES, help="the image")
    actions.add_parser("list", allow_abbrev=False, help="the images built here: references, sizes, archives")


def _print_list() -> None:
    images = stored_images()
    if not images:
        print("no images built yet (edgeaigc images build)")
        return
    print(f"{'IMAGE':<48} {'SIZE':>9} {'HASH':<12}  ARCHIVE")
    for image in images:
        archives = list(images_dir().glob(f"{image['ref'].split('/')[-1].replace(':local-', '-')}-*.tar"))
        archive = f"{archives[0].name} ({archives[0].stat().st_size / 2**20:.0f} MiB)" if archives else "-"
        print(f"{image['ref']:<48} {image['size']:>9} {image['hash'][:12]:<12}  {archive}")


def run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"[images] {message}", file=sys.stderr, flush=True)

    try:
        if args.action == "list":
            _print_list()
            return 0
        if args.action == "export":
            if len(args.platform) != 1:
                print("edgeaigc images export: one --platform (an archive holds one)", file=sys.stderr)
                return 2
            print(export_image(args.name, args.platform[0], progress))
            return 0
        started = time.monotonic()
        archives = ensure_images(args.image, args.platform, progress)
        for (name, arch), archive in archives.items():
            print(f"{image_ref(name)} linux/{arch} {archive}")
        progress(f"done in {time.monotonic() - started:.1f} s")
        return 0
    except ImageBuildError as error:
        print(f"edgeaigc images: {error}", file=sys.stderr)
        return 1
