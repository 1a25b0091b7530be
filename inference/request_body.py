"""Reading a request's body within limits of size, time and memory: the model server and the gateway alike.

Three limits keep clients that send too much, too slowly or not at all from exhausting a server:

- **size**: a body over ``max_bytes`` gets 413, at once when its Content-Length says so, else as
  soon as the running count of received bytes passes it;
- **time**: the whole body must arrive within ``timeout_s`` (408), so a stalled or trickling upload
  gives its connection back;
- **memory**: the body bytes a server holds at once, over all its requests (:class:`BodyMemory`),
  stay under a limit; the request whose bytes would pass it gets 503 with ``Retry-After``. Bytes
  are counted as they arrive, not as announced: a connection that announces 16 MiB and sends
  nothing costs nothing.

A body that timed out also closes its connection. A client that disconnects mid-body gets 400,
the gateway's and the server's word alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import numpy as np
from starlette.requests import ClientDisconnect

from edgeaigc.inference.errors import InvalidInput, PayloadTooLarge, RequestTimeout, ServerBusy

if TYPE_CHECKING:
    from starlette.requests import Request

#: Default time a whole request body may take to arrive.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Default body bytes one server holds at once over all its requests.
DEFAULT_BODY_MEMORY_BYTES = 64 * 2**20


class BodyMemory:
    """The request-body bytes one server holds at once (read or being read), and their limit."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held = 0

    def claim(self, size: int) -> None:
        """Count ``size`` more bytes, or raise :class:`ServerBusy` if that would pass the limit."""
        if self.held + size > self.limit_bytes:
            raise ServerBusy(
                f"the server holds {self.held} bytes of request bodies and its limit is {self.limit_bytes}; retry later"
            )
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


def parse_length(value: str | None) -> int | None:
    """A length header's value as a number, or None when absent or not plain ASCII digits (``²`` is not 2)."""
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


@contextlib.asynccontextmanager
async def request_body(
    request: Request, max_bytes: int, timeout_s: float, memory: BodyMemory, align_at: int | None = None
) -> AsyncIterator[bytes | memoryview]:
    """The request body, counted in ``memory`` until the block ends (see the module doc for the limits).

    Args:
        request: the request whose body to read.
        max_bytes: larger bodies get 413.
        timeout_s: the whole body must arrive within this many seconds, else 408.
        memory: the server's body memory; 503 with Retry-After when the body would pass its limit.
        align_at: None: the body as ``bytes``. A number: a body with a Content-Length is read into
            one buffer of that size (no joining of chunks) where ``align_at`` bytes in start at a
            64-byte boundary, so that binary tensor data after a JSON header of that length reaches
            onnxruntime aligned, without a copy.
    """
    claimed = 0

    def claim(size: int) -> None:
        nonlocal claimed
        memory.claim(size)
        claimed += size

    try:
        try:
            async with asyncio.timeout(timeout_s):
                body = await _read(request, max_bytes, claim, align_at)
        except TimeoutError:
            timed_out = RequestTimeout(f"the request body did not arrive within {timeout_s:g} s")
            timed_out.close_connection = True  # the client is too slow to wait for the rest
            raise timed_out from None
        except ClientDisconnect:
            raise InvalidInput("the client disconnected before sending the whole body") from None
        yield body
    finally:
        memory.release(claimed)


async def _read(
    request: Request, max_bytes: int, claim: Callable[[int], None], align_at: int | None
) -> bytes | memoryview:
    declared = request.headers.get("content-length")
    size = parse_length(declared)
    if size is not None and size > max_bytes:
        raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {max_bytes} bytes")
    if size is None or align_at is None:
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            claim(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)
    view: memoryview | None = None
    received = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        if received + len(chunk) > size:
            raise InvalidInput(f"the body is longer than its Content-Length of {size} bytes")
        claim(len(chunk))
        if view is None:
            # Allocated when the first bytes arrive, and np.empty leaves its pages to the kernel until
            # they are written: memory follows the bytes received, not the Content-Length announced.
            storage = np.empty(size + 64, dtype=np.uint8)
            start = -(storage.ctypes.data + align_at) % 64
            view = storage.data[start : start + size]
        view[received : received + len(chunk)] = chunk
        received += len(chunk)
    if received != size:
        raise InvalidInput(f"the body has {received} bytes but its Content-Length is {size}")
    return view if view is not None else b""
