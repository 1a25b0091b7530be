"""``edgeaigc fetch-model`` against a real HTTP server on 127.0.0.1: exit codes, what is left in the
destination, retries, the storage budget, and the model server loading what was fetched."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeaigc.inference.delivery import cli as fetch_cli
from edgeaigc.inference.server.repository import ModelRepository, ModelState
from tests.component.builders import affine_model

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = PAYLOAD
    status: int = 200
    content_length: bool = True
    #: the first ``failures`` requests get ``failure_status`` (0: the body is cut half-way instead)
    failures: int = 0
    failure_status: int = 503
    delay_s: float = 0.0
    #: offer byte ranges (``Accept-Ranges`` and an ``ETag``; a ``Range`` with a matching ``If-Range`` gets 206)
    ranges: bool = False
    #: the file as it is after the first request (a file replaced on the server mid-download)
    replaced_by: bytes | None = None


@dataclass
class FileServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    #: (path, Range header, status sent) of every request that carried a Range
    ranged: list[tuple[str, str, int]] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: a response without Content-Length ends when the connection closes.
    protocol_version = "HTTP/1.0"
    server: http.server.ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        files: FileServer = self.server.files  # type: ignore[attr-defined]
        files.requests[self.path] += 1
        route = files.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        time.sleep(route.delay_s)
        first = files.requests[self.path] == 1
        body = route.body if first or route.replaced_by is None else route.replaced_by
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        requested = self.headers.get("Range")
        if requested and route.ranges and self.headers.get("If-Range") == etag:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            files.ranged.append((self.path, requested, 206))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body[start:])
            return
        if requested:
            files.ranged.append((self.path, requested, 200))
        if files.requests[self.path] <= route.failures:
            if route.failure_status:
                self.send_error(route.failure_status)
                return
            # Promise the whole body, send half, hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            if route.ranges:
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        self.send_response(route.status)
        if route.content_length:
            self.send_header("Content-Length", str(len(body)))
        if route.ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up on purpose (over budget, timeout) is no error of the test server


@pytest.fixture
def server() -> Iterator[FileServer]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    files = FileServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.files = files  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(dest: Path, *arguments: str, max_bytes: int = 2 * len(PAYLOAD)) -> tuple[int, str]:
    """Run the command in a real process: (exit code, the termination log's content)."""
    log = dest.parent / "termination-log"
    log.unlink(missing_ok=True)
    command = [sys.executable, "-m", "edgeaigc.cli", "fetch-model", *arguments, "--dest", str(dest)]
    command += ["--max-bytes", str(max_bytes), "--termination-log", str(log), "--backoff", "0.05"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    message = log.read_text() if log.exists() else ""
    if result.returncode == 0:
        assert message == "", "a success must leave the termination log alone"
    else:
        assert message and "\n" not in message, f"one line expected, got {message!r}"
        assert message in result.stderr
    return result.returncode, message


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_good_file_is_verified_and_put_in_place_with_its_checksum(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m.onnx"] = Route()
    dest = tmp_path / "models" / "det"
    code, _ = fetch(dest, "--url", f"{server.url}/m.onnx", "--sha256", PAYLOAD_SHA)
    assert code == 0
    assert files_in(dest) == ["config.yaml", "model.onnx"]  # no temporary file left
    assert (dest / "model.onnx").read_bytes() == PAYLOAD
    assert (dest / "config.yaml").read_text() == f"sha256: {PAYLOAD_SHA}\n"


def test_wrong_checksum_exits_3_and_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m.onnx"] = Route()
    dest = tmp_path / "models" / "det"
    code, message = fetch(dest, "--url", f"{server.url}/m.onnx", "--sha256", WRONG_SHA)
    assert code == 3
    assert f"expected sha256 {WRONG_SHA}, got {PAYLOAD_SHA}" in message
    assert files_in(dest) == []
    assert server.requests["/m.onnx"] == 1  # a wrong file is not downloaded again


def test_unreachable_source_exits_4_after_every_attempt(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: every connection is refused.
    started = time.monotonic()
    code, message = fetch(
        tmp_path / "m", "--url", f"http://127.0.0.1:{port}/m.onnx", "--sha256", PAYLOAD_SHA, "--attempts", "3"
    )
    assert code == 4
    assert "ConnectError" in message and "after 3 attempts" in message
    assert time.monotonic() - started >= 0.05 + 0.1  # backed off twice, the second wait doubled
    assert files_in(tmp_path / "m") == []


def test_a_server_that_never_answers_times_out_and_exits_4(server: FileServer, tmp_path: Path) -> None:
    server.routes["/slow"] = Route(delay_s=2.0)
    code, message = fetch(
        tmp_path / "m", "--url", f"{server.url}/slow", "--sha256", PAYLOAD_SHA, "--attempts", "2", "--timeout", "0.3"
    )
    assert code == 4 and "ReadTimeout" in message and "after 2 attempts" in message
    assert server.requests["/slow"] == 2


def test_http_errors_are_final_or_retried_by_status(server: FileServer, tmp_path: Path) -> None:
    code, message = fetch(tmp_path / "a", "--url", f"{server.url}/missing", "--sha256", PAYLOAD_SHA)
    assert code == 4 and "HTTP 404" in message
    assert server.requests["/missing"] == 1  # not retried
    server.routes["/busy"] = Route(failures=2, failure_status=503)
    code, _ = fetch(tmp_path / "b", "--url", f"{server.url}/busy", "--sha256", PAYLOAD_SHA, "--attempts", "3")
    assert code == 0 and server.requests["/busy"] == 3
    assert (tmp_path / "b" / "model.onnx").read_bytes() == PAYLOAD


def test_a_connection_lost_mid_body_is_retried_from_the_start(server: FileServer, tmp_path: Path) -> None:
    """A server that offers no byte ranges: the retry downloads the whole file again."""
    server.routes["/cut"] = Route(failures=1, failure_status=0)
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/cut", "--sha256", PAYLOAD_SHA)
    assert code == 0 and server.requests["/cut"] == 2 and server.ranged == []
    assert files_in(tmp_path / "m") == ["config.yaml", "model.onnx"]
    assert (tmp_path / "m" / "model.onnx").read_bytes() == PAYLOAD


def test_a_connection_lost_mid_body_resumes_where_it_stopped(server: FileServer, tmp_path: Path) -> None:
    server.routes["/cut"] = Route(failures=1, failure_status=0, ranges=True)
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/cut", "--sha256", PAYLOAD_SHA)
    assert code == 0 and server.requests["/cut"] == 2
    assert server.ranged == [("/cut", f"bytes={len(PAYLOAD) // 2}-", 206)]
    assert files_in(tmp_path / "m") == ["config.yaml", "model.onnx"]
    assert (tmp_path / "m" / "model.onnx").read_bytes() == PAYLOAD


def test_a_file_replaced_mid_download_is_fetched_whole_again(server: FileServer, tmp_path: Path) -> None:
    """If-Range: the new file does not match the first half's ETag, so the server sends it whole."""
    replacement = bytes(reversed(PAYLOAD))
    server.routes["/cut"] = Route(failures=1, failure_status=0, ranges=True, replaced_by=replacement)
    sha = hashlib.sha256(replacement).hexdigest()
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/cut", "--sha256", sha)
    assert code == 0 and server.ranged == [("/cut", f"bytes={len(PAYLOAD) // 2}-", 200)]
    assert (tmp_path / "m" / "model.onnx").read_bytes() == replacement


def test_a_download_cut_in_one_run_is_resumed_by_the_next(server: FileServer, tmp_path: Path) -> None:
    """The init container's restart continues what the failed run received, instead of starting over."""
    server.routes["/cut"] = Route(failures=1, failure_status=0, ranges=True)
    url = f"{server.url}/cut"
    code, message = fetch(tmp_path / "m", "--url", url, "--sha256", PAYLOAD_SHA, "--attempts", "1")
    assert code == 4 and "after 1 attempts" in message
    partial = f".model.onnx.{PAYLOAD_SHA}.part"
    assert files_in(tmp_path / "m") == [partial, partial + ".json"]  # what arrived, and how to resume it
    assert (tmp_path / "m" / partial).stat().st_size == len(PAYLOAD) // 2
    code, _ = fetch(tmp_path / "m", "--url", url, "--sha256", PAYLOAD_SHA)
    assert code == 0 and server.ranged == [("/cut", f"bytes={len(PAYLOAD) // 2}-", 206)]
    assert files_in(tmp_path / "m") == ["config.yaml", "model.onnx"]
    assert (tmp_path / "m" / "model.onnx").read_bytes() == PAYLOAD


def test_a_partial_file_of_another_source_or_checksum_is_not_resumed(server: FileServer, tmp_path: Path) -> None:
    server.routes["/cut"] = Route(failures=1, failure_status=0, ranges=True)
    server.routes["/other"] = Route(ranges=True)
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/cut", "--sha256", PAYLOAD_SHA, "--attempts", "1")
    assert code == 4 and len(files_in(tmp_path / "m")) == 2
    # The same file from another URL: downloaded whole (the validator belongs to the first server's file).
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/other", "--sha256", PAYLOAD_SHA)
    assert code == 0 and server.ranged == [] and files_in(tmp_path / "m") == ["config.yaml", "model.onnx"]
    # A different expected file: the leftover of another download is dropped, not continued.
    server.requests.clear()
    code, _ = fetch(tmp_path / "n", "--url", f"{server.url}/cut", "--sha256", PAYLOAD_SHA, "--attempts", "1")
    assert code == 4
    code, _ = fetch(tmp_path / "n", "--url", f"{server.url}/other", "--sha256", WRONG_SHA)
    assert code == 3 and server.ranged == [] and files_in(tmp_path / "n") == []


def test_a_failure_without_resume_support_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    server.routes["/cut"] = Route(failures=1, failure_status=0)
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/cut", "--sha256", PAYLOAD_SHA, "--attempts", "1")
    assert code == 4 and files_in(tmp_path / "m") == []


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "no-content-length"])
def test_a_file_over_the_budget_exits_5_and_leaves_nothing(
    server: FileServer, tmp_path: Path, content_length: bool
) -> None:
    server.routes["/big"] = Route(content_length=content_length)
    dest = tmp_path / "m"
    code, message = fetch(
        dest, "--url", f"{server.url}/big", "--sha256", PAYLOAD_SHA, "--attempts", "3", max_bytes=len(PAYLOAD) - 1
    )
    assert code == 5
    # Known up front it is refused before reading; otherwise as soon as it grows past the budget.
    assert ("more than the budget" if content_length else "grew past the budget") in message
    assert files_in(dest) == []
    assert server.requests["/big"] == 1  # over budget is final, not retried


def test_exactly_the_budget_is_accepted(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m"] = Route(content_length=False)
    code, _ = fetch(tmp_path / "m", "--url", f"{server.url}/m", "--sha256", PAYLOAD_SHA, max_bytes=len(PAYLOAD))
    assert code == 0


def test_a_good_file_already_there_is_kept_and_a_bad_one_replaced(server: FileServer, tmp_path: Path) -> None:
    server.routes["/m.onnx"] = Route()
    dest = tmp_path / "m"
    assert fetch(dest, "--url", f"{server.url}/m.onnx", "--sha256", PAYLOAD_SHA)[0] == 0
    inode = (dest / "model.onnx").stat().st_ino
    assert fetch(dest, "--url", f"{server.url}/m.onnx", "--sha256", PAYLOAD_SHA)[0] == 0
    assert server.requests["/m.onnx"] == 1 and (dest / "model.onnx").stat().st_ino == inode
    (dest / "model.onnx").write_bytes(b"truncated")
    (dest / ".model.onnx.x1.part").write_bytes(b"left by a killed attempt")
    assert fetch(dest, "--url", f"{server.url}/m.onnx", "--sha256", PAYLOAD_SHA)[0] == 0
    assert server.requests["/m.onnx"] == 2 and (dest / "model.onnx").read_bytes() == PAYLOAD
    assert files_in(dest) == ["config.yaml", "model.onnx"]


def test_copy_from_a_volume_path(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "detectors").mkdir(parents=True)
    (volume / "detectors" / "yolox.onnx").write_bytes(PAYLOAD)
    source = str(volume / "detectors" / "yolox.onnx")
    assert fetch(tmp_path / "a", "--path", source, "--sha256", PAYLOAD_SHA)[0] == 0
    assert (tmp_path / "a" / "model.onnx").read_bytes() == PAYLOAD
    # Without a checksum the copy is taken as is; its digest is recorded for the server to verify.
    assert fetch(tmp_path / "b", "--path", source)[0] == 0
    assert (tmp_path / "b" / "config.yaml").read_text() == f"sha256: {PAYLOAD_SHA}\n"
    code, message = fetch(tmp_path / "c", "--path", source, "--sha256", WRONG_SHA)
    assert code == 3 and files_in(tmp_path / "c") == []
    code, message = fetch(tmp_path / "d", "--path", str(volume / "nothing.onnx"))
    assert code == 4 and "No such file or directory" in message
    code, message = fetch(tmp_path / "e", "--path", source, max_bytes=1000)
    assert code == 5 and "more than the budget" in message and files_in(tmp_path / "e") == []


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, message = fetch(tmp_path / "m", "--url", "http://127.0.0.1:9/m")
    assert code == 2 and "--sha256 is required with --url" in message
    result = subprocess.run(
        [sys.executable, "-m", "edgeaigc.cli", "fetch-model", "--path", "x", "--dest", "d", "--max-bytes", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "not a positive number of bytes: 'lots'" in result.stderr


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fetch_cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--url", "--path", "--sha256", "--dest", "--max-bytes", "--attempts", "--termination-log"):
        assert option in text


def test_the_server_loads_the_fetched_model_and_verifies_it_again(server: FileServer, tmp_path: Path) -> None:
    model = affine_model(tmp_path / "affine.onnx").read_bytes()
    server.routes["/affine.onnx"] = Route(body=model)
    root = tmp_path / "models"
    digest = hashlib.sha256(model).hexdigest()
    assert fetch(root / "affine", "--url", f"{server.url}/affine.onnx", "--sha256", digest)[0] == 0

    async def load() -> tuple[ModelState, str]:
        repository = ModelRepository(root, workers=1)
        try:
            await repository.start()
            record = repository.record("affine")
            return record.state, record.reason
        finally:
            repository.close()

    assert asyncio.run(load()) == (ModelState.READY, "")
    # The digest went into config.yaml: a file changed after the fetch is refused at load.
    (root / "affine" / "model.onnx").write_bytes(model[:-1] + bytes([model[-1] ^ 1]))
    state, reason = asyncio.run(load())
    assert state is ModelState.UNAVAILABLE and "checksum mismatch" in reason
