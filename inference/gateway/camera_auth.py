"""Which camera sends a request: a bearer token per camera, the camera's name taken from the token.

A camera's metrics drive the operator's placement, so a name is not taken on the client's word.
The tokens come from a Kubernetes Secret mounted as a directory, one file per camera (file name =
camera name, content = token; :func:`read_camera_tokens`), or from one file of ``camera token``
lines. :class:`CameraTokens` re-reads them when they change (polled like the routing table), so a
camera added to the Secret can send without a gateway restart.

:class:`CameraAuthMiddleware` guards the inference paths (``/v2/models/...``):

- no ``Authorization: Bearer`` header, or a token of no camera: 401 with a ``WWW-Authenticate``
  challenge;
- a request that names another camera (the ``X-Edgeaigc-Camera`` header or the ``camera`` query
  parameter) than its token's: 403;
- otherwise the request goes on with ``X-Edgeaigc-Camera`` set to the token's camera, the one
  name the gateway (its metrics, the upstream) then sees, and without the ``Authorization`` header.

Health, ``/v2`` and ``/metrics`` stay open (probes and Prometheus scrape them without credentials).
Tokens are looked up by their SHA-256 digest and then compared with :func:`hmac.compare_digest`:
neither the lookup nor the comparison takes a time that depends on how much of a guess is right.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse

from edgeaigc.inference.auth import Forbidden, Unauthorized, bearer_token, read_token
from edgeaigc.inference.errors import InferenceServerError, error_body

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The paths that need a camera's token.
GUARDED_PREFIX = "/v2/models/"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_camera_tokens(path: Path) -> dict[str, str]:
    """camera name -> token, from a directory (a mounted Secret: one file per camera) or a file of
    ``camera token`` lines (``#`` starts a comment).

    Raises:
        OSError: ``path`` cannot be read.
        ValueError: a line or file that is not a camera and a token.
    """
    tokens: dict[str, str] = {}
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            # A Secret mount holds ..data and ..<timestamp> beside the keys' links.
            if entry.name.startswith(".") or not entry.is_file():
                continue
            tokens[entry.name] = read_token(entry)
        return tokens
    for number, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{number}: expected 'camera token'")
        tokens[words[0]] = words[1]
    return tokens


class CameraTokens:
    """The cameras' tokens read from ``path``; :meth:`poll` re-reads them when they changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_digest: dict[bytes, tuple[str, str]] = {}
        self._seen: object = None
        self.loads = 0
        self.last_error: str | None = None

    @property
    def cameras(self) -> set[str]:
        return {camera for camera, _ in self._by_digest.values()}

    def _stamp(self) -> object:
        """What changes when a token changes: every entry's inode, time and size (following the Secret's links)."""
        if not self.path.is_dir():
            stat = os.stat(self.path)
            return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        stamps = []
        for entry in sorted(self.path.iterdir()):
            if not entry.name.startswith("."):
                stat = os.stat(entry)
                stamps.append((entry.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def poll(self) -> bool:
        """Re-read the tokens if they changed; True when a new set is in use. A set that cannot be read is
        logged and the last good one kept (none at first: every request then gets 401)."""
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            tokens = read_camera_tokens(self.path)
        except (OSError, ValueError) as error:
            if self.last_error != str(error):
                logger.warning(
                    "camera tokens from %s not read (%s); keeping %d", self.path, error, len(self._by_digest)
                )
            self.last_error = str(error)
            return False
        by_digest: dict[bytes, tuple[str, str]] = {}
        for camera, token in tokens.items():
            digest = _digest(token)
            if digest in by_digest:
                # One token for two cameras would let one send as the other: neither keeps it.
                logger.warning("cameras %s and %s share a token: neither is accepted", by_digest[digest][0], camera)
                by_digest[digest] = ("", token)
                continue
            by_digest[digest] = (camera, token)
        self._by_digest = {digest: entry for digest, entry in by_digest.items() if entry[0]}
        self._seen = stamp
        self.last_error = None
        self.loads += 1
        logger.info("%d camera tokens in use (%s)", len(self._by_digest), self.path)
        return True

    def camera_of(self, token: str) -> str | None:
        """The camera whose token this is, or None."""
        entry = self._by_digest.get(_digest(token))
        if entry is None or not hmac.compare_digest(entry[1].encode(), token.encode()):
            return None
        return entry[0]

    def authenticate(self, authorization: str | None, claimed: list[str]) -> str:
        """The camera of the request's token; raises :class:`Unauthorized` (no valid token) or
        :class:`Forbidden` (the request names another camera)."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("a camera token is needed (Authorization: Bearer <token>)")
        camera = self.camera_of(token)
        if camera is None:
            raise Unauthorized("the bearer token is not a camera's token", invalid_token=True)
        other = next((name for name in claimed if name != camera), None)
        if other is not None:
            raise Forbidden(f"this token is camera '{camera}''s: it may not send as camera '{other[:80]}'")
        return camera


class CameraAuthMiddleware:
    """Authenticates the cameras' requests to ``/v2/models/...`` (pure ASGI; see the module doc)."""

    def __init__(self, app: ASGIApp, tokens: CameraTokens, camera_header: str, camera_query: str) -> None:
        self.app = app
        self.tokens = tokens
        self.camera_header = camera_header.lower().encode()
        self.camera_query = camera_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        authorization = next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)
        claimed = [v.decode("latin-1") for k, v in headers if k == self.camera_header]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        claimed += [value for key, value in query if key == self.camera_query]
        try:
            camera = self.tokens.authenticate(authorization, claimed)
        except InferenceServerError as error:
            response = JSONResponse(error_body(error.message), status_code=error.status_code, headers=error.headers)
            await response(scope, receive, send)
            return
        kept = [(k, v) for k, v in headers if k not in (b"authorization", self.camera_header)]
        scope = {**scope, "headers": [*kept, (self.camera_header, camera.encode())]}
        await self.app(scope, receive, send)
