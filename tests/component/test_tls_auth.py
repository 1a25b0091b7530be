"""TLS and authentication of the data plane, with real servers on 127.0.0.1 (issue 12, item 3).

``edgeaigc serve`` and ``edgeaigc gateway`` processes with certificates from the data-plane CA of
``edgeaigc cluster certificate``; clients with the right CA, a wrong one, with and without client
certificates; the repository API off, on without a token, on with one; cameras with tokens that
are theirs and tokens that claim another camera.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgeaigc.cluster.certificate import make_certificate, write_files
from edgeaigc.inference.gateway.gateway import CAMERA_HEADER, SERVED_BY_HEADER, GatewaySettings
from edgeaigc.inference.gateway.security import GatewaySecurity
from edgeaigc.inference.server import cli as serve_cli
from edgeaigc.inference.tls import client_context
from tests.component.builders import affine_model
from tests.component.conftest import ServerProcess, free_port, running_gateway, sample_value
from tests.component.tables import EDGE_NODE, routing_table

AFFINE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}
LOOPBACK = ["localhost", "127.0.0.1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CAs' worth of files: ``server`` (the right CA's serving pair), ``client`` (a client pair of the
    same CA), ``other`` (a pair of another CA, for "wrong CA")."""
    root = tmp_path_factory.mktemp("pki")
    directories = {}
    for name, ca_parent in (("server", root / "ca"), ("client", root / "ca"), ("other", root / "other-ca")):
        directory = root / name
        write_files(directory, *make_certificate(ca_parent, LOOPBACK, f"test-{name}"))
        directories[name] = directory
    return directories


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tls-models")
    affine_model(root / "affine" / "model.onnx")
    return root


def context(ca: Path | None, client: Path | None = None) -> ssl.SSLContext:
    made = client_context(ca, client / "tls.crt" if client else None, client / "tls.key" if client else None)
    assert isinstance(made, ssl.SSLContext), made
    return made


@contextlib.contextmanager
def serve(
    models: Path, *extra: str, scheme: str = "http", verify: ssl.SSLContext | bool = False
) -> Iterator[ServerProcess]:
    """``edgeaigc serve`` on 127.0.0.1 with ``extra`` arguments, yielded once ready (asked with ``verify``)."""
    port = free_port()
    command = [sys.executable, "-m", "edgeaigc.inference.server.cli", "--model-repository", str(models)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning", *extra]
    with process_serving(command, f"{scheme}://127.0.0.1:{port}", verify) as running:
        yield running


@contextlib.contextmanager
def process_serving(command: list[str], url: str, verify: ssl.SSLContext | bool) -> Iterator[ServerProcess]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = ServerProcess(url, process)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=5, verify=verify) as client:
            while True:
                assert process.poll() is None, f"exited {process.returncode}: {process.communicate()[1]}"
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{url}/v2/health/ready").status_code == 200:
                        break
                assert time.monotonic() < deadline, f"{url} not ready within 30 s"
                time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        try:
            running.stderr = process.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            process.kill()
            running.stderr = process.communicate(timeout=10)[1]


def tls_args(pair: Path, client_ca: Path | None = None) -> list[str]:
    arguments = ["--tls-cert", str(pair / "tls.crt"), "--tls-key", str(pair / "tls.key")]
    return arguments + (["--tls-client-ca", str(client_ca)] if client_ca else [])


# -- TLS of the servers ------------------------------------------------------------------------------


def test_https_with_the_right_ca_and_not_with_a_wrong_one(models: Path, pki: dict[str, Path]) -> None:
    right, wrong = context(pki["server"] / "ca.crt"), context(pki["other"] / "ca.crt")
    with serve(models, *tls_args(pki["server"]), scheme="https", verify=right) as server:
        assert httpx.post(f"{server.url}/v2/models/affine/infer", json=AFFINE, verify=right).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{server.url}/v2/health/ready", verify=wrong)
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port gets no HTTP answer
            httpx.get(server.url.replace("https://", "http://") + "/v2/health/ready")


def test_mutual_tls_rejects_a_client_without_a_certificate(models: Path, pki: dict[str, Path]) -> None:
    ca = pki["server"] / "ca.crt"
    with_cert, without = context(ca, pki["client"]), context(ca)
    with serve(models, *tls_args(pki["server"], ca), scheme="https", verify=with_cert) as server:
        infer = f"{server.url}/v2/models/affine/infer"
        assert httpx.post(infer, json=AFFINE, verify=with_cert).status_code == 200
        refused = httpx.post(infer, json=AFFINE, verify=without)
        assert refused.status_code == 401 and "client certificate" in refused.json()["error"]
        assert httpx.get(f"{server.url}/v2/repository/index", verify=without).status_code == 401
        # what a kubelet probe and a Prometheus scrape ask (neither presents a client certificate) answers
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/v2/models/affine/ready"):
            assert httpx.get(f"{server.url}{path}", verify=without).status_code == 200, path
        # a certificate of another CA is no better than none: the handshake itself fails
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/ready", verify=context(ca, pki["other"]))


def test_unusable_tls_files_exit_2_with_a_clear_message(
    models: Path, pki: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model-repository", str(models), "--port", "0"]
    mismatched = ["--tls-cert", str(pki["server"] / "tls.crt"), "--tls-key", str(pki["other"] / "tls.key")]
    assert serve_cli.main([*base, *mismatched]) == 2
    assert "are not a PEM certificate and its key (KEY_VALUES_MISMATCH)" in capsys.readouterr().err
    missing = tmp_path / "absent.crt"
    assert serve_cli.main([*base, "--tls-cert", str(missing), "--tls-key", str(pki["server"] / "tls.key")]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    assert serve_cli.main([*base, *tls_args(pki["server"], not_pem)]) == 2
    assert f"{not_pem} holds no PEM certificate" in capsys.readouterr().err
    assert serve_cli.main([*base, "--tls-cert", str(pki["server"] / "tls.crt")]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


# -- the repository API ------------------------------------------------------------------------------


def test_repository_api_is_off_by_default_and_the_model_stays(models: Path) -> None:
    with serve(models) as server:
        unload = httpx.post(f"{server.url}/v2/repository/models/affine/unload")
        assert unload.status_code == 403
        assert "the model repository API is off on this server" in unload.json()["error"]
        assert httpx.post(f"{server.url}/v2/repository/models/affine/load").status_code == 403
        assert httpx.get(f"{server.url}/v2/models/affine/ready").status_code == 200
        # the index answers, with names and states only (a reason holds paths and raw load errors)
        assert httpx.post(f"{server.url}/v2/repository/index").json() == [{"name": "affine", "state": "READY"}]


def test_repository_api_needs_a_token_and_an_unload_without_it_changes_nothing(models: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    with serve(models, "--repository-api", "--auth-token-file", str(token_file)) as server:
        unload_url = f"{server.url}/v2/repository/models/affine/unload"
        anonymous = httpx.post(unload_url)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="edgeaigc"'
        wrong = httpx.post(unload_url, headers={"Authorization": "Bearer s3cret-token-012345678"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Bearer realm="edgeaigc", error="invalid_token"'
        assert httpx.get(f"{server.url}/v2/models/affine/ready").status_code == 200  # still loaded
        assert set(httpx.post(f"{server.url}/v2/repository/index").json()[0]) == {"name", "state"}

        authorized = {"Authorization": "Bearer s3cret-token-0123456789"}
        detailed = httpx.post(f"{server.url}/v2/repository/index", headers=authorized).json()
        assert set(detailed[0]) == {"name", "version", "state", "reason"}
        assert httpx.post(unload_url, headers=authorized).status_code == 200
        assert httpx.get(f"{server.url}/v2/models/affine/ready").status_code == 503

        token_file.write_text("rotated-token-9876543210\n")  # a rotated Secret counts from the next request
        assert httpx.post(unload_url, headers=authorized).status_code == 401
        rotated = {"Authorization": "Bearer rotated-token-9876543210"}
        assert httpx.post(f"{server.url}/v2/repository/models/affine/load", headers=rotated).status_code == 200


def test_repository_api_without_a_token_file_is_bad_usage(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_cli.main(["--model-repository", str(models), "--repository-api"]) == 2
    assert "--repository-api lets clients load and unload models: it needs --auth-token-file" in capsys.readouterr().err
    assert serve_cli.main(["--model-repository", str(models), "--auth-token-file", str(models / "none")]) == 2
    assert "--auth-token-file: [Errno 2] No such file or directory" in capsys.readouterr().err


# -- cameras -> gateway ------------------------------------------------------------------------------


@pytest.fixture
def camera_gateway(tmp_path: Path, models: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """A gateway whose cameras cam-a and cam-b authenticate with tokens (a Secret-like directory), routing
    ``affine`` to a real local server; yields a client of it and the tokens' directory."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "cam-a").write_text("token-a-0123456789abcdef\n")
    (tokens / "cam-b").write_text("token-b-0123456789abcdef\n")
    table = tmp_path / "routing.json"
    with serve(models) as edge:
        table.write_text(routing_table(1, {"affine": [edge.url]}, {}).to_json())
        settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=table, poll_interval_s=0.1)
        with running_gateway(settings, security=GatewaySecurity(camera_tokens=tokens)) as gateway:
            yield gateway.client, tokens


def test_a_camera_is_its_token_and_may_not_claim_another(camera_gateway: tuple[httpx.Client, Path]) -> None:
    client, _ = camera_gateway
    infer = "/v2/models/affine/infer"
    anonymous = client.post(infer, json=AFFINE, headers={CAMERA_HEADER: "cam-a"})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="edgeaigc"'
    guessed = client.post(infer, json=AFFINE, headers={"Authorization": "Bearer token-a-0123456789abcdeX"})
    assert guessed.status_code == 401 and 'error="invalid_token"' in guessed.headers["www-authenticate"]

    as_a = {"Authorization": "Bearer token-a-0123456789abcdef"}
    claiming_b = client.post(infer, json=AFFINE, headers={**as_a, CAMERA_HEADER: "cam-b"})
    assert claiming_b.status_code == 403
    assert claiming_b.json()["error"] == "this token is camera 'cam-a''s: it may not send as camera 'cam-b'"
    assert client.post(f"{infer}?camera=cam-b", json=AFFINE, headers=as_a).status_code == 403

    answered = [
        client.post(infer, json=AFFINE, headers=as_a),  # the camera's name comes from its token
        client.post(infer, json=AFFINE, headers={**as_a, CAMERA_HEADER: "cam-a"}),
        client.post(f"{infer}?camera=cam-a", json=AFFINE, headers=as_a),
    ]
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert answered[0].headers[SERVED_BY_HEADER] == "edge"
    # probes and Prometheus need no token; only the authenticated requests are in the metrics, as cam-a's
    assert client.get("/v2/health/ready").status_code == 200
    scrape = client.get("/metrics").text
    labels = {"model": "affine", "code": "200", "served_by": "edge", "edge_node": EDGE_NODE}
    assert sample_value(scrape, "edgeaigc_requests_total", **labels) == 3
    sent = 3 * len(client.build_request("POST", infer, json=AFFINE).content)
    assert sample_value(scrape, "edgeaigc_camera_request_bytes_total", edge_node=EDGE_NODE, camera="cam-a") == sent
    assert sample_value(scrape, "edgeaigc_camera_request_bytes_total", edge_node=EDGE_NODE, camera="cam-b") is None
    assert sample_value(scrape, "edgeaigc_camera_request_bytes_total", edge_node=EDGE_NODE, camera="unknown") in (
        None,
        0,
    )


def test_a_camera_added_to_the_secret_can_send_without_a_restart(camera_gateway: tuple[httpx.Client, Path]) -> None:
    client, tokens = camera_gateway
    as_c = {"Authorization": "Bearer token-c-0123456789abcdef"}
    assert client.post("/v2/models/affine/infer", json=AFFINE, headers=as_c).status_code == 401
    (tokens / "cam-c").write_text("token-c-0123456789abcdef\n")
    deadline = time.monotonic() + 10
    while client.post("/v2/models/affine/infer", json=AFFINE, headers=as_c).status_code != 200:
        assert time.monotonic() < deadline, "the new camera's token was not picked up within 10 s"
        time.sleep(0.1)
    (tokens / "cam-c").unlink()  # and a removed one stops
    while client.post("/v2/models/affine/infer", json=AFFINE, headers=as_c).status_code != 401:
        assert time.monotonic() < deadline, "the removed camera's token was still accepted after 10 s"
        time.sleep(0.1)


# -- gateway -> cloud over HTTPS ---------------------------------------------------------------------


@contextlib.contextmanager
def gateway_process(table: Path, *extra: str) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE, "--no-camera-auth"]
    command += ["--routing-table", str(table), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with process_serving([*command, *extra], f"http://127.0.0.1:{port}", verify=False) as running:
        yield running


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_the_gateway_relays_to_a_tls_cloud_server(
    models: Path, pki: dict[str, Path], tmp_path: Path, mutual: bool
) -> None:
    ca = pki["server"] / "ca.crt"
    client_ca = ca if mutual else None
    right = context(ca, pki["client"] if mutual else None)
    with serve(
        models, "--served-by", "cloud", *tls_args(pki["server"], client_ca), scheme="https", verify=right
    ) as cloud:
        table = tmp_path / "routing.json"
        table.write_text(routing_table(1, {}, {"affine": cloud.url}).to_json())
        assert cloud.url.startswith("https://")
        client_pair = ["--cloud-client-cert", str(pki["client"] / "tls.crt")]
        client_pair += ["--cloud-client-key", str(pki["client"] / "tls.key")]
        trusted = ["--cloud-ca", str(ca), *(client_pair if mutual else [])]
        with gateway_process(table, *trusted) as gateway:
            response = httpx.post(f"{gateway.url}/v2/models/affine/infer", json=AFFINE)
            assert response.status_code == 200, response.text
            assert response.headers[SERVED_BY_HEADER] == "cloud"
        # the wrong CA (or, under mutual TLS, no client certificate): the relay fails, 502, and says why
        untrusted = ["--cloud-ca", str(pki["other"] / "ca.crt")] if not mutual else ["--cloud-ca", str(ca)]
        with gateway_process(table, *untrusted) as gateway:
            response = httpx.post(f"{gateway.url}/v2/models/affine/infer", json=AFFINE)
            assert response.status_code == 502
            if not mutual:
                assert re.search(
                    r"cloud https://127\.0\.0\.1:\d+: .*CERTIFICATE_VERIFY_FAILED", response.json()["error"]
                ), response.text
            else:  # the cloud answers 401 (client certificate required): a failed relay, not the camera's fault
                assert re.search(r"HTTP 401 .*client certificate", response.json()["error"]), response.text


def test_gateway_tls_flags_are_checked_at_start(tmp_path: Path, pki: dict[str, Path]) -> None:
    table = tmp_path / "routing.json"
    command = [sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE, "--no-camera-auth"]
    command += ["--routing-table", str(table), "--port", "0"]
    bad_ca = subprocess.run([*command, "--cloud-ca", str(tmp_path / "none.crt")], capture_output=True, text=True)
    assert bad_ca.returncode == 2 and f"cannot read {tmp_path / 'none.crt'}" in bad_ca.stderr
    half = subprocess.run(
        [*command, "--cloud-client-cert", str(pki["client"] / "tls.crt")], capture_output=True, text=True
    )
    assert half.returncode == 2 and "a client certificate and its key go together" in half.stderr
    tokens = tmp_path / "tokens"
    tokens.write_text("cam-a\n")
    bad_tokens = subprocess.run(
        [sys.executable, "-m", "edgeaigc.inference.gateway.cli", "--edge-node", EDGE_NODE, "--routing-table",
         str(table), "--camera-tokens", str(tokens)], capture_output=True, text=True,
    )  # fmt: skip
    assert bad_tokens.returncode == 2 and "expected 'camera token'" in bad_tokens.stderr


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, pki: dict[str, Path]) -> None:
    """cert-manager renews by rewriting the Secret: the running server's next handshakes use the new pair."""
    import socket
    import threading

    import uvicorn
    from fastapi import FastAPI

    from edgeaigc.inference.http_server import ConnectionLimits, server_config
    from edgeaigc.inference.tls import CertificateReloader, ServerTls

    mounted = tmp_path / "tls"
    mounted.mkdir()
    for name in ("tls.crt", "tls.key"):
        (mounted / name).write_bytes((pki["server"] / name).read_bytes())
    tls = ServerTls(mounted / "tls.crt", mounted / "tls.key")
    app = FastAPI()
    app.get("/ping")(lambda: {"pong": True})
    config = server_config(app, ConnectionLimits(), log_level="warning", **tls.uvicorn_settings())
    config.load()  # as run_app does: the context exists before the server, for the reloader
    reloader = CertificateReloader(config.ssl, tls)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/ping"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        first, renewed = context(pki["server"] / "ca.crt"), context(pki["other"] / "ca.crt")
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.get(url, verify=first).status_code == 200
        assert not reloader.poll()  # unchanged files: nothing to do
        (mounted / "tls.key").write_bytes((pki["other"] / "tls.key").read_bytes())  # mid-swap: a key of another pair
        assert not reloader.poll()  # not loaded: the last good pair stays
        assert httpx.get(url, verify=first).status_code == 200
        (mounted / "tls.crt").write_bytes((pki["other"] / "tls.crt").read_bytes())
        assert reloader.poll()
        assert httpx.get(url, verify=renewed).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, verify=first)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


def _secret_mount(directory: Path, data: dict[str, str], version: int) -> None:
    """Write ``data`` as the kubelet writes a Secret volume: the keys in a new ``..<timestamp>`` directory, the
    ``..data`` link swapped to it at once, one link per key into ``..data`` (links of removed keys deleted)."""
    directory.mkdir(exist_ok=True)
    target = directory / f"..2026_12_06_{version:04d}"
    target.mkdir()
    for key, value in data.items():
        (target / key).write_text(value)
    temporary = directory / "..data_tmp"
    temporary.symlink_to(target.name)
    temporary.replace(directory / "..data")
    for key in data:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(Path("..data") / key)
    for link in directory.iterdir():
        if not link.name.startswith(".") and link.name not in data:
            link.unlink()


def test_a_rotated_token_in_a_secret_mount_replaces_the_old_one(tmp_path: Path, models: Path) -> None:
    tokens = tmp_path / "camera-tokens"
    _secret_mount(tokens, {"cam-a": "first-token-of-a-0123456789"}, 1)
    table = tmp_path / "routing.json"
    with serve(models) as edge:
        table.write_text(routing_table(1, {"affine": [edge.url]}, {}).to_json())
        settings = GatewaySettings(edge_node=EDGE_NODE, routing_table=table, poll_interval_s=0.1)
        with running_gateway(settings, security=GatewaySecurity(camera_tokens=tokens)) as gateway:

            def status(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return gateway.client.post("/v2/models/affine/infer", json=AFFINE, headers=headers).status_code

            assert status("first-token-of-a-0123456789") == 200
            _secret_mount(tokens, {"cam-a": "second-token-of-a-9876543210"}, 2)
            deadline = time.monotonic() + 10
            while status("second-token-of-a-9876543210") != 200:
                assert time.monotonic() < deadline, "the rotated token was not picked up within 10 s"
                time.sleep(0.1)
            assert status("first-token-of-a-0123456789") == 401


def test_cluster_certificate_writes_a_usable_pair_and_says_what_is_wrong(tmp_path: Path) -> None:
    def certificate(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "edgeaigc.cli", "cluster", "certificate", *arguments]
        environment = {"PATH": "/usr/bin:/bin", "EDGEAIGC_CLUSTER_DIR": str(tmp_path / "no-cluster")}
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment, check=False)

    written = certificate("s", "--dns", "127.0.0.1", "--output-dir", str(tmp_path / "out"))
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "out" / "tls.key").stat().st_mode & 0o077 == 0  # the key is its owner's alone
    assert isinstance(context(tmp_path / "out" / "ca.crt", tmp_path / "out"), ssl.SSLContext)
    assert certificate("s", "--dns", " ", "--output-dir", str(tmp_path / "x")).returncode == 2
    no_cluster = certificate("s", "--dns", "a.b.svc")
    assert no_cluster.returncode == 1 and "no cluster 'edgeaigc'" in no_cluster.stderr
