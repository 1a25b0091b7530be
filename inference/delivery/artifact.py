"""Model delivery: put one verified ``model.onnx`` into a model directory of the repository.

An InferenceModel's ``spec.artifact`` names where its ONNX file comes from; the inference pod's
``fetch-model`` init container calls :func:`fetch_url` or :func:`copy_file` before the server
starts. Either one:

* keeps a ``model.onnx`` already in place when its sha256 is the expected one (a restarted init
  container does not download again);
* refuses a file larger than ``max_bytes`` (the model's share of the edge node's storage), before
  reading it when its size is known up front, otherwise as soon as it grows past it;
* streams into a temporary file in the destination directory, hashing on the way, and renames
  it to ``model.onnx`` only once the sha256 matches: the server never sees a partial or wrong
  file, and a failure leaves nothing behind but a download the server can resume (HTTP ranges),
  which the next run (the init container's restart) continues instead of starting over;
* records the digest as ``sha256`` in the model's ``config.yaml``, so the server verifies the
  file again when it loads it (:meth:`edgeaigc.inference.server.model.OnnxModel.load`).

Failures are :class:`ArtifactError` subclasses whose ``exit_code`` is the command's exit status
(:mod:`edgeaigc.inference.delivery.exit_codes`, where each code's condition reason lives too).
This module imports only the standard library and PyYAML at load time (httpx when downloading), so
the init container starts fast with little memory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import yaml

from edgeaigc.inference.delivery.exit_codes import ExitCode

if TYPE_CHECKING:
    import httpx

#: Names of the model repository's layout. They live here, and the repository imports them,
#: because this module stays light: the init container must not load onnxruntime and FastAPI.
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
#: Prefix and suffix of the temporary file a fetch writes before the rename.
PARTIAL_PREFIX = f".{MODEL_FILE}."
PARTIAL_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16

#: Progress callback: (bytes so far, total bytes or None when the source does not say).
Progress = Callable[[int, int | None], None]


class ArtifactError(Exception):
    """The model file could not be put in place; the message is one line for a human."""

    exit_code: ExitCode = ExitCode.FAILED


class ChecksumMismatch(ArtifactError):
    exit_code = ExitCode.CHECKSUM_MISMATCH


class SourceUnreachable(ArtifactError):
    exit_code = ExitCode.SOURCE_UNREACHABLE


class OverBudget(ArtifactError):
    exit_code = ExitCode.OVER_BUDGET


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    size: int
    #: the file was already there with the expected checksum (nothing was read from the source)
    kept: bool


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


# -- the destination ---------------------------------------------------------------------------


def _prepare(dest: Path, keep: Path | None = None) -> None:
    """Create the model directory and drop partial files earlier attempts left (but ``keep``,
    a download of the same file to resume, and its resume record)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArtifactError(f"cannot create {dest}: {error.strerror or error}") from None
    kept = {keep, _resume_record(keep)} if keep is not None else set()
    for leftover in dest.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}*"):
        if leftover not in kept:
            leftover.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _kept(dest: Path, sha256: str | None, max_bytes: int) -> FetchResult | None:
    """The model file already in place, if it is the expected one; a wrong one is removed.

    Without an expected checksum nothing is kept (there is no way to tell the file is current).
    Removing a wrong file first means a fetch never needs room for two copies.
    """
    target = dest / MODEL_FILE
    if not target.is_file():
        return None
    size = target.stat().st_size
    if sha256 is not None and size <= max_bytes and sha256_of(target) == sha256:
        _record_checksum(dest, sha256)
        return FetchResult(target, sha256, size, kept=True)
    target.unlink()
    return None


def _record_checksum(dest: Path, sha256: str) -> None:
    """Set ``sha256`` in the model's config.yaml (other keys kept) so the server verifies at load."""
    path = dest / CONFIG_FILE
    document: dict[str, object] = {}
    with contextlib.suppress(OSError, yaml.YAMLError):
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict):
            document = loaded
    if document.get("sha256") == sha256:
        return
    document["sha256"] = sha256
    with tempfile.NamedTemporaryFile("w", dir=dest, prefix=f".{CONFIG_FILE}.", delete=False) as handle:
        yaml.safe_dump(document, handle, sort_keys=True)
    os.replace(handle.name, path)


def _check_room(dest: Path, size: int, max_bytes: int, source: str, already: int = 0) -> None:
    """Refuse a file of ``size`` bytes over the budget or the free space (``already`` of it written)."""
    if size > max_bytes:
        raise OverBudget(f"{source} is {mib(size)} ({size} bytes), more than the budget of {mib(max_bytes)}")
    free = shutil.disk_usage(dest).free
    if size - already > free:
        raise OverBudget(f"{source} is {mib(size)} but only {mib(free)} is free where {dest} is")


class _Partial:
    """A temporary file in the destination that becomes ``model.onnx`` once its checksum is right.

    ``path`` None: a new file of a random name. Otherwise that file, continued from its end when
    ``resume`` is set and it exists (its bytes are hashed again, so the digest covers the whole).
    """

    def __init__(self, dest: Path, max_bytes: int, source: str, path: Path | None = None, resume: bool = False) -> None:
        self.dest, self.max_bytes, self.source = dest, max_bytes, source
        self.digest = hashlib.sha256()
        self.size = 0
        #: leave the file (and its resume record) in place at the end, for a later run to continue
        self.keep = False
        if path is None:
            handle, name = tempfile.mkstemp(dir=dest, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
            self.path = Path(name)
            self.file: IO[bytes] = os.fdopen(handle, "wb")
            return
        self.path = path
        if resume and path.is_file():
            self.file = path.open("r+b")
            for chunk in iter(lambda: self.file.read(CHUNK_BYTES), b""):
                self.digest.update(chunk)
                self.size += len(chunk)
        else:
            self.file = path.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise OverBudget(f"{self.source} grew past the budget of {mib(self.max_bytes)} while being read")
        try:
            self.file.write(chunk)
        except OSError as error:
            failure = OverBudget if error.errno in (errno.ENOSPC, errno.EDQUOT) else ArtifactError
            raise failure(f"cannot write {self.dest}: {error.strerror or error}") from None
        self.digest.update(chunk)

    def restart(self) -> None:
        """Start over (a retried download the server will not resume)."""
        self.file.seek(0)
        self.file.truncate()
        self.digest, self.size = hashlib.sha256(), 0

    def commit(self, expected: str | None) -> FetchResult:
        actual = self.digest.hexdigest()
        if expected is not None and actual != expected:
            raise ChecksumMismatch(f"{self.source}: expected sha256 {expected}, got {actual} ({self.size} bytes)")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        target = self.dest / MODEL_FILE
        os.replace(self.path, target)
        _record_checksum(self.dest, actual)
        return FetchResult(target, actual, self.size, kept=False)

    def close(self) -> None:
        """At the end: the file goes (renamed by a commit, or removed) unless it is kept to resume."""
        self.file.close()
        if not self.keep:
            self.path.unlink(missing_ok=True)
            _resume_record(self.path).unlink(missing_ok=True)


@contextlib.contextmanager
def _partial(
    dest: Path, max_bytes: int, source: str, path: Path | None = None, resume: bool = False
) -> Iterator[_Partial]:
    partial = _Partial(dest, max_bytes, source, path, resume)
    try:
        yield partial
    finally:
        # After a commit the file has been renamed; otherwise nothing of the attempt stays unless
        # it is kept for a later run to resume.
        partial.close()


def _download_path(dest: Path, sha256: str) -> Path:
    """The partial file of a download: named by the expected digest, so a later run resumes only the same file."""
    return dest / f"{PARTIAL_PREFIX}{sha256}{PARTIAL_SUFFIX}"


def _resume_record(partial: Path) -> Path:
    """Beside a kept partial file: the URL and validator it was downloaded with (JSON)."""
    return partial.with_name(partial.name + ".json")


# -- sources -----------------------------------------------------------------------------------


def copy_file(
    source: Path,
    dest: Path,
    *,
    sha256: str | None,
    max_bytes: int,
    progress: Progress | None = None,
) -> FetchResult:
    """Copy ``source`` (a file on a mounted volume or in an image) into ``dest/model.onnx``.

    Raises:
        SourceUnreachable: the file does not exist or cannot be read.
        OverBudget: larger than ``max_bytes`` or than the free space.
        ChecksumMismatch: ``sha256`` given and the copy's differs.
    """
    _prepare(dest)
    kept = _kept(dest, sha256, max_bytes)
    if kept is not None:
        return kept
    try:
        reader = source.open("rb")
    except OSError as error:
        raise SourceUnreachable(f"cannot read {source}: {error.strerror or error}") from None
    with reader:
        size = os.fstat(reader.fileno()).st_size
        _check_room(dest, size, max_bytes, str(source))
        with _partial(dest, max_bytes, str(source)) as partial:
            for chunk in iter(lambda: reader.read(CHUNK_BYTES), b""):
                partial.write(chunk)
                if progress is not None:
                    progress(partial.size, size)
            return partial.commit(sha256)


#: HTTP statuses worth another attempt (the server or a proxy may recover); others are final.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256: str,
    max_bytes: int,
    attempts: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Download ``url`` into ``dest/model.onnx``; retried with exponential backoff.

    Connection errors, timeouts, a connection lost mid-body and the statuses of
    :data:`RETRY_STATUSES` are retried; other HTTP errors are final. A retry after a connection
    lost mid-body resumes where it stopped (an HTTP ``Range`` request guarded by ``If-Range``)
    when the server advertised byte ranges and a strong validator; it starts over when the server
    does not honour the range or the file changed in between.

    Args:
        attempts: tries in all (at least 1); waits ``backoff_s``, ``2 * backoff_s``, ... between.
        timeout_s: connect and read timeout (no single read may take longer).

    Raises:
        SourceUnreachable: every attempt failed, or the server answered with a final error.
        OverBudget: ``Content-Length`` or the bytes received exceed ``max_bytes`` (not retried).
        ChecksumMismatch: the downloaded file's sha256 differs (not retried).
    """
    import httpx

    partial_path = _download_path(dest, sha256)
    _prepare(dest, keep=partial_path)
    kept = _kept(dest, sha256, max_bytes)
    if kept is not None:
        partial_path.unlink(missing_ok=True)
        _resume_record(partial_path).unlink(missing_ok=True)
        return kept
    failures: list[str] = []
    resume = _Resume.left_by_earlier_run(partial_path, url)
    with (
        httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True) as client,
        _partial(dest, max_bytes, url, partial_path, resume=resume.validator is not None) as partial,
    ):
        if partial.size and log is not None:
            log(f"an earlier run left {mib(partial.size)} of this file: asking for the rest")
        for attempt in range(1, max(attempts, 1) + 1):
            if attempt > 1:
                delay = min(backoff_s * 2 ** (attempt - 2), 60.0)
                if log is not None:
                    log(f"attempt {attempt - 1}/{attempts} failed ({failures[-1]}); retrying in {delay:.1f} s")
                time.sleep(delay)
            try:
                _download(client, url, dest, partial, resume, progress, log)
            except _Retry as retry:
                failures.append(str(retry))
                continue
            return partial.commit(sha256)
        # Unreachable for now: what arrived stays for the next run (the init container's restart)
        # to resume, if the server can resume it.
        partial.keep = partial.size > 0 and resume.headers(partial.size) != {}
    raise SourceUnreachable(f"{url}: {failures[-1]} (after {len(failures)} attempts)")


def fetch_from_peers(
    peers: list[str],
    dest: Path,
    *,
    sha256: str,
    max_bytes: int,
    timeout_s: float = 2.0,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[FetchResult, str] | None:
    """Try each peer URL once, in order, for the file with ``sha256``; None when none delivered it.

    A peer is a neighbouring edge node's model server (``GET /v2/models/NAME/artifact``, on the
    site's LAN): it saves the backhaul, but it is trusted for nothing. The file must have the
    expected sha256 (a mismatch is discarded, never renamed into place), fit ``max_bytes``, and
    arrive within ``timeout_s`` per connect and read; any failure moves on to the next peer, and
    the caller then fetches from the artifact's own source.

    Returns:
        The result and the peer URL that delivered it (a file already in place counts as kept).
    """
    for peer in peers:
        try:
            result = fetch_url(
                peer, dest, sha256=sha256, max_bytes=max_bytes, attempts=1, timeout_s=timeout_s, progress=progress
            )
        except ArtifactError as error:
            if log is not None:
                log(f"peer {peer} did not deliver the file ({type(error).__name__}: {error}); trying the next source")
            continue
        return result, peer
    return None


class _Retry(Exception):
    """This attempt failed in a way another one may not."""


@dataclass
class _Resume:
    """What the first response said about resuming: byte ranges offered, and the file's validator."""

    ranges: bool = False
    #: a strong ETag or a Last-Modified date: ``If-Range`` makes the server send the whole file if
    #: it changed, so a resumed file is never half old, half new.
    validator: str | None = None

    def learn(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            return
        self.ranges = response.headers.get("accept-ranges", "").strip().lower() == "bytes"
        etag = response.headers.get("etag")
        strong_etag = etag if etag and not etag.startswith("W/") else None
        self.validator = strong_etag or response.headers.get("last-modified")
        if response.headers.get("content-encoding", "identity") != "identity":
            self.ranges = False  # ranges of a compressed body are not ranges of the file

    @classmethod
    def left_by_earlier_run(cls, partial: Path, url: str) -> _Resume:
        """What an earlier run that could not finish recorded beside its partial file (nothing if
        it was for another URL, or there is no such file)."""
        try:
            record = json.loads(_resume_record(partial).read_text())
        except (OSError, ValueError):
            return cls()
        validator = record.get("validator") if isinstance(record, dict) else None
        if not partial.is_file() or record.get("url") != url or not isinstance(validator, str):
            return cls()
        return cls(ranges=True, validator=validator)

    def save(self, partial: Path, url: str) -> None:
        """Record how to resume ``partial`` (removed when the server cannot resume it)."""
        record = _resume_record(partial)
        if not (self.ranges and self.validator):
            record.unlink(missing_ok=True)
            return
        with tempfile.NamedTemporaryFile("w", dir=partial.parent, prefix=f"{record.name}.", delete=False) as handle:
            json.dump({"url": url, "validator": self.validator}, handle)
        os.replace(handle.name, record)

    def headers(self, have: int) -> dict[str, str]:
        """Request headers to get the rest after ``have`` bytes, or none to start over."""
        if have == 0 or not self.ranges or self.validator is None:
            return {}
        return {"Range": f"bytes={have}-", "If-Range": self.validator}


def _download(
    client: httpx.Client,
    url: str,
    dest: Path,
    partial: _Partial,
    resume: _Resume,
    progress: Progress | None,
    log: Callable[[str], None] | None,
) -> None:
    import httpx

    headers = resume.headers(partial.size)  # none: the 200 below starts the file over
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code in RETRY_STATUSES:
                raise _Retry(f"HTTP {response.status_code} {response.reason_phrase}")
            if response.status_code == 416:  # the range no longer fits the file: start over
                partial.restart()
                resume.ranges = False
                raise _Retry("HTTP 416 Range Not Satisfiable")
            total: int | None
            if response.status_code == 206 and headers:
                try:
                    total = _resumed_total(response, partial.size)
                except ValueError as error:
                    partial.restart()
                    resume.ranges = False
                    raise _Retry(str(error)) from None
                if log is not None:
                    log(f"resuming at {mib(partial.size)}")
            elif response.status_code == 200:
                if headers and log is not None:
                    log("the server sent the whole file again (no range, or the file changed): starting over")
                partial.restart()
                resume.learn(response)
                resume.save(partial.path, url)
                total = _content_length(response)
            else:
                raise SourceUnreachable(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
            if total is not None:
                _check_room(dest, total, partial.max_bytes, url, already=partial.size)
            for chunk in response.iter_bytes(CHUNK_BYTES):
                partial.write(chunk)
                if progress is not None:
                    progress(partial.size, total)
            if total is not None and partial.size != total:
                raise _Retry(f"connection closed after {partial.size} of {total} bytes")
    except httpx.UnsupportedProtocol as error:
        raise SourceUnreachable(f"{url}: {error}") from None
    except httpx.TransportError as error:
        raise _Retry(f"{type(error).__name__}: {error or 'no detail'}") from None
    except httpx.InvalidURL as error:
        raise SourceUnreachable(f"{url}: invalid URL: {error}") from None


def _resumed_total(response: httpx.Response, have: int) -> int:
    """The file's size from a 206's ``Content-Range: bytes have-end/total``; a range that does not
    start where we stopped is a server we cannot trust to resume (ValueError: start over)."""
    content_range = response.headers.get("content-range", "")
    unit, _, spec = content_range.partition(" ")
    span, _, size = spec.partition("/")
    first, _, _ = span.partition("-")
    if unit != "bytes" or not first.isdigit() or int(first) != have or not size.isdigit():
        raise ValueError(f"the server resumed with Content-Range {content_range!r}, not at byte {have}")
    return int(size)


def _content_length(response: httpx.Response) -> int | None:
    """The body's size when the server states it for the bytes we get (not for a compressed body)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None
