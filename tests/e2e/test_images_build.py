"""The images built on this machine (``edgeaigc images build``) run: the inference image's server
answers a real inference over loopback, on amd64 and (opt-in, slow) on arm64 under emulation of the
Raspberry Pi 4 and 5 CPUs.

Measured here (docs/images.md): the inference image cold (Debian base, then pip inside buildah) takes
about 4 minutes on amd64, after a source change 1-2 minutes; cached, the amd64 tests take 5-11 s. The
arm64 tests run only with ``EDGEAIGC_TEST_ARM64=1``: about 12 s per Pi CPU with the image cached,
3-4 minutes more when a source change rebuilds it under qemu, 15 more without the arm64 base.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeaigc.cluster import images
from tests.component.builders import AFFINE_B, AFFINE_W, affine_model, binary_request, split_binary_response
from tests.component.conftest import SHARED_DATA, free_port, wait_until_ready

BUILDAH = pytest.mark.skipif(
    shutil.which("buildah") is None, reason="buildah is not installed (Debian: apt-get install buildah)"
)

YOLOX = SHARED_DATA / "yolox_nano.onnx"
#: Raspberry Pi 4 and Pi 5 cores, as qemu-user names them (QEMU_CPU).
PI_CPUS = {"pi4": "cortex-a72", "pi5": "cortex-a76"}
#: What each board's kernel says in /proc/cpuinfo per core: Features (the HWCAPs qemu also gives
#: that CPU model), variant, part, revision; then the board's revision code and model.
PI_CPUINFO = {
    "pi4": ("fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", "3", "c03114", "Raspberry Pi 4 Model B Rev 1.4"),
    "pi5": (
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "0x4",
        "0xd0b",
        "1",
        "d04170",
        "Raspberry Pi 5 Model B Rev 1.0",
    ),
}
ARM64 = pytest.mark.skipif(
    os.environ.get("EDGEAIGC_TEST_ARM64") != "1", reason="arm64 under emulation is slow: set EDGEAIGC_TEST_ARM64=1"
)


def progress(message: str) -> None:
    print(f"[images] {message}", flush=True)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models the server in the image reads: a tiny affine model, and YOLOX-Nano when the shared data is there."""
    root = tmp_path_factory.mktemp("models")
    affine_model(root / "affine" / "model.onnx")
    if YOLOX.is_file():
        (root / "yolox").mkdir()
        shutil.copyfile(YOLOX, root / "yolox" / "model.onnx")
    # The image runs as 65532: the mounted repository must be readable by anyone.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def pi_cpuinfo(board: str, directory: Path) -> Path:
    """A Raspberry Pi's /proc/cpuinfo, one block per host CPU (the cores the container really has).

    qemu-user 7.2 passes the host's x86 /proc/cpuinfo through, and onnxruntime's CPU detection
    (pytorch/cpuinfo) then dies on a NULL pointer at import, under every CPU model. A Pi's kernel
    shows an ARM one; bind-mounted over /proc/cpuinfo, it is what the board would show.
    """
    features, variant, part, revision, board_revision, model = PI_CPUINFO[board]
    core = "BogoMIPS\t: 108.00\nFeatures\t: {}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    core += "CPU variant\t: {}\nCPU part\t: {}\nCPU revision\t: {}\n"
    blocks = [
        f"processor\t: {index}\n" + core.format(features, variant, part, revision)
        for index in range(os.cpu_count() or 1)
    ]
    path = directory / f"cpuinfo-{board}"
    path.write_text("\n".join(blocks) + f"\nRevision\t: {board_revision}\nModel\t\t: {model}\n")
    path.chmod(0o644)
    return path


@contextlib.contextmanager
def served_from_image(
    arch: str,
    repository: Path,
    env: dict[str, str] | None = None,
    cpuinfo: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> Iterator[str]:
    """``edgeaigc serve`` run by the stored inference image (buildah, runc, host network, 127.0.0.1 only)."""
    container = subprocess.run(
        [
            "buildah",
            "from",
            "--pull=never",
            "--quiet",
            f"--platform=linux/{arch}",
            images.stored_ref("inference", arch),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    # runc (the runtime of the real nodes), not buildah's chroot: only runc lets a file be mounted over /proc/cpuinfo.
    command = ["buildah", "run", "--isolation", "oci", "--network", "host"]
    command += [f"--env={name}={value}" for name, value in (env or {}).items()]
    command += ["--volume", f"{cpuinfo}:/proc/cpuinfo:ro"] if cpuinfo else []
    command += ["--volume", f"{repository}:/models:ro", container, "--"]
    command += ["edgeaigc", "serve", "--model-repository", "/models", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout_s=ready_timeout_s)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        subprocess.run(["buildah", "rm", container], capture_output=True)


def infer(url: str, model: str, name: str, array: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    body, headers = binary_request({name: ("FP32", array)}, {"parameters": {"binary_data_output": True}})
    response = httpx.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers, timeout=timeout_s)
    assert response.status_code == 200, response.text
    document, blobs = split_binary_response(response.content, int(response.headers["inference-header-content-length"]))
    [output] = document["outputs"]
    return np.frombuffer(blobs[0], dtype="<f4").reshape(output["shape"])


def yolox_frame() -> np.ndarray:
    """A fixed 1x3x416x416 pattern (the same on every architecture)."""
    y, x = np.mgrid[0:416, 0:416].astype(np.float32)
    channels = [(x + y) % 256, (x * 3) % 256, (y * 5 + 17) % 256]
    return np.stack(channels)[None].astype(np.float32)


def answers(url: str) -> dict[str, np.ndarray]:
    """The server's outputs for the affine model and (when present) YOLOX-Nano."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 3
    found = {"affine": infer(url, "affine", "x", x)}
    np.testing.assert_allclose(found["affine"], x @ AFFINE_W + AFFINE_B, rtol=1e-5, atol=1e-5)
    if YOLOX.is_file():
        found["yolox"] = infer(url, "yolox", "images", yolox_frame(), timeout_s=300)
        assert found["yolox"].shape == (1, 3549, 85)
    return found


@pytest.fixture(scope="module")
def amd64_answers(repository: Path) -> dict[str, np.ndarray]:
    images.ensure_images(["inference"], ["amd64"], progress)
    with served_from_image("amd64", repository) as url:
        return answers(url)


@BUILDAH
def test_amd64_inference_image_answers(amd64_answers: dict[str, np.ndarray]) -> None:
    if "yolox" in amd64_answers:
        import onnxruntime as ort

        session = ort.InferenceSession(str(YOLOX), providers=["CPUExecutionProvider"])
        [expected] = session.run(None, {"images": yolox_frame()})
        np.testing.assert_allclose(amd64_answers["yolox"], expected, rtol=1e-4, atol=1e-4)


@BUILDAH
def test_images_export_as_archives_named_for_containerd() -> None:
    archive = images.export_image("pause", images.host_arch(), progress)
    listing = subprocess.run(["tar", "-xOf", str(archive), "index.json"], capture_output=True, text=True, check=True)
    assert f'"org.opencontainers.image.ref.name":"{images.image_ref("pause")}"' in listing.stdout


@BUILDAH
@ARM64
@pytest.mark.parametrize("board", PI_CPUS)
def test_arm64_inference_image_answers_on_pi_cpus(
    board: str, repository: Path, amd64_answers: dict[str, np.ndarray], tmp_path: Path
) -> None:
    images.ensure_images(["inference"], ["arm64"], progress)
    images.ensure_binfmt("arm64")
    # qemu-user takes its CPU model from the environment of the process it runs.
    environment = {"QEMU_CPU": PI_CPUS[board]}
    with served_from_image("arm64", repository, environment, pi_cpuinfo(board, tmp_path), ready_timeout_s=600) as url:
        arm64 = answers(url)
    for model, expected in amd64_answers.items():
        np.testing.assert_allclose(arm64[model], expected, rtol=1e-3, atol=1e-3, err_msg=f"{model} on {board}")


def test_the_cache_key_covers_every_file_the_dockerfiles_copy() -> None:
    for name in images.DOCKERFILE_IMAGES:
        sources = images.copied_sources(images.dockerfile(name).read_text())
        assert {"pyproject.toml", "constraints.txt", "cli", "policy", "inference", "cluster", "operator"} <= set(
            sources
        )
        assert "/install" not in sources, "COPY --from=build is not a build-context path"


def test_the_cache_key_changes_with_a_copied_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(images.REPO, checkout, ignore=shutil.ignore_patterns(".git", "build", "tests", "*.egg-info"))
    monkeypatch.setattr(images, "REPO", checkout)
    before = images.input_hash("inference", "arm64")
    assert images.input_hash("inference", "arm64") == before
    assert images.input_hash("inference", "amd64") != before
    (checkout / "inference" / "__pycache__").mkdir(exist_ok=True)
    (checkout / "inference" / "__pycache__" / "x.pyc").write_bytes(b"never installed")
    assert images.input_hash("inference", "arm64") == before
    with (checkout / "inference" / "serve.py").open("a") as source:
        source.write("# changed\n")
    assert images.input_hash("inference", "arm64") != before


@pytest.mark.parametrize(
    "arguments",
    [["build", "--platform", "linux/s390x"], ["build", "--image", "gateway"], ["build", "--platform", "arm64"]],
)
def test_bad_usage_exits_2(arguments: list[str]) -> None:
    from edgeaigc.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["images", *arguments])
    assert exited.value.code == 2


def test_a_build_step_streams_its_steps_and_fails_with_its_last_lines() -> None:
    seen: list[str] = []
    script = (
        "echo '[1/2] STEP 1/9: FROM base'; echo noise; echo 'COMMIT x'; echo 'pip: no matching distribution'; exit 3"
    )
    with pytest.raises(images.ImageBuildError) as failed:
        images._stream(["sh", "-c", script], "inference/amd64", seen.append)
    assert seen == ["inference/amd64: [1/2] STEP 1/9: FROM base", "inference/amd64: COMMIT x"]
    assert "exit 3" in str(failed.value) and str(failed.value).endswith("pip: no matching distribution")


def test_a_failed_build_exits_1_with_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeaigc.cli.main import main

    def fail(*_: object) -> None:
        raise images.ImageBuildError("inference/amd64 failed (exit 1); last lines:\nboom")

    monkeypatch.setattr(images, "ensure_images", fail)
    assert main(["images", "build", "--platform", "linux/amd64", "--image", "inference"]) == 1
    assert capsys.readouterr().err.endswith("boom\n")
