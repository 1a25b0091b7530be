"""Reading an inference request's body within a size limit: the model server and the gateway refuse alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeaigc.inference.errors import PayloadTooLarge

if TYPE_CHECKING:
    from starlette.requests import Request


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, 413 as soon as it is known to be larger than ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
