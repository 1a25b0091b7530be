"""uvicorn's httptools protocol with a size limit and a deadline for request heads.

uvicorn's httptools protocol (the fast one, from ``uvicorn[standard]``) neither bounds a request
head nor times it out: a client could send headers forever (the server's memory grows with
them), or open connections and send nothing (each is kept for good, and counts against
``limit_concurrency``). Its h11 protocol bounds heads but has no deadline either, and is slower.
Here a request head larger than ``max_head_bytes`` gets 400, and a connection whose request head
is not complete ``head_timeout_s`` after it began (or after the connection opened) is closed.
The same deadline ends the reading (and dropping) of the rest of a body that was answered before
it was read. Nothing is parsed here: httptools parses, this class only counts bytes and keeps a timer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgeaigc.inference.http_server import ConnectionLimits


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline for request heads.

    ``limits`` is a class attribute: uvicorn makes one protocol per connection from a class
    (:func:`edgeaigc.inference.http_server.server_config` subclasses this one with its limits).
    """

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._client_cert_name: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A client certificate is there only if it verified at the handshake (CERT_OPTIONAL still checks
        # one that is presented): its subject goes into each request's ASGI ``tls`` extension, where
        # edgeaigc.inference.tls.ClientCertificateGate looks for it.
        peer = transport.get_extra_info("peercert")
        self._client_cert_name = _subject(peer) if peer else None
        self._start_head_deadline()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # httptools hands a header over only once the next one begins, and keeps what it has of an
        # unfinished one itself: the head is measured here, in bytes received while it is incomplete
        # (a chunk that also ends an earlier request's body counts whole: an overestimate, on the safe side).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self.send_400_response(f"Request head larger than {self.limits.max_head_bytes} bytes.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._client_cert_name is not None:
            self.scope["extensions"] = {
                **self.scope.get("extensions", {}),
                "tls": {"client_cert_name": self._client_cert_name},
            }
        self._in_head = True
        self._head_bytes = 0
        if self._head_deadline is None:
            self._start_head_deadline()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered before its body was read (413, 503): the rest of the body is read and dropped, so
        # that the client gets the answer (closing now would reset the connection under it), but
        # for no longer than a head may take.
        if self.cycle.more_body and self._head_deadline is None and not self.transport.is_closing():
            self._start_head_deadline()

    def _start_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def _subject(peer: dict[str, Any]) -> str:
    """A certificate's subject as ``CN=...,O=...`` from :meth:`ssl.SSLSocket.getpeercert`'s form."""
    parts = [f"{key}={value}" for rdn in peer.get("subject", ()) for key, value in rdn]
    return ",".join(parts) or "(no subject)"
