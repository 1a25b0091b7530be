"""Bearer tokens (RFC 6750): reading them from requests and files, comparing them in constant time.

A token lives in a file (a Kubernetes Secret's key, mounted): :class:`TokenFile` re-reads it when
it changes, so a rotated Secret takes effect without a restart. Comparisons go through
:func:`hmac.compare_digest`, whose time does not depend on where two tokens differ.

:class:`Unauthorized` (401, with the ``WWW-Authenticate`` challenge a client needs) is for a
request without valid credentials; :class:`Forbidden` (403) for valid credentials that do not
allow what the request asks, or an endpoint that is off.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from edgeaigc.inference.errors import InferenceServerError

#: The challenge's realm: what the token opens.
REALM = "edgeaigc"


class Unauthorized(InferenceServerError):
    """No credentials, or credentials that are not valid: 401 with a ``Bearer`` challenge."""

    status_code = 401

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token

    @property
    def headers(self) -> dict[str, str]:
        challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if self.invalid_token else "")
        return {**super().headers, "WWW-Authenticate": challenge}


class Forbidden(InferenceServerError):
    """Authenticated (or not needed), but not allowed: 403."""

    status_code = 403


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace, such as a trailing newline, is not part of it).

    Raises:
        OSError: unreadable.
        ValueError: empty, or not one line of printable ASCII.
    """
    token = path.read_text(encoding="ascii", errors="replace").strip()
    if not token:
        raise ValueError(f"{path} holds no token")
    if not token.isprintable() or not token.isascii() or any(ch.isspace() for ch in token):
        raise ValueError(f"{path}: a token is one word of printable ASCII")
    return token


class TokenFile:
    """One bearer token in a file, re-read when the file changes (a rotated Secret)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token = read_token(path)  # a bad file at start is a usage error, not a server without a token
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)  # follows the ..data link a Secret mount swaps
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def current(self) -> str:
        """The token now (the last valid one if the file became unreadable or empty)."""
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            try:
                self.token = read_token(self.path)
                self._seen = stamp
            except (OSError, ValueError):
                pass  # mid-swap or broken: the last good token stays
        return self.token

    def check(self, authorization: str | None, what: str) -> None:
        """Raise :class:`Unauthorized` unless ``authorization`` carries this token; ``what`` names the action."""
        given = bearer_token(authorization)
        if given is None:
            raise Unauthorized(f"{what} needs a bearer token (Authorization: Bearer <token>)")
        if not tokens_equal(given, self.current()):
            raise Unauthorized(f"{what}: the bearer token is not valid", invalid_token=True)
