"""Domain exceptions of the model server and the one place where they become HTTP responses.

The data plane and the model repository raise these; they know nothing of HTTP. The routes
never build error responses themselves: :func:`register_error_handlers` maps every exception
below to its status code and a body of the Open Inference Protocol's form,
``{"error": "<message>"}``.

| exception | status | when |
|---|---|---|
| :class:`InvalidInput` | 400 | malformed JSON or tensors, wrong shape or datatype, unknown output |
| :class:`ModelNotFound` | 404 | no such model (or version) in the repository |
| :class:`RequestTimeout` | 408 | the body did not arrive within ``--body-timeout`` |
| :class:`PayloadTooLarge` | 413 | request body over ``--max-request-bytes`` (a JSON body: ``--max-json-bytes``) |
| :class:`InferenceFailed` | 500 | onnxruntime failed on input that passed validation |
| :class:`ModelNotReady` | 503 | model known but not loaded, loading, or failed to load (reason given) |
| :class:`ServerNotReady` | 503 | start-up loading has not finished |
| :class:`ServerBusy` | 503 + ``Retry-After`` | too many requests in flight, or request bodies over their memory |
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


class InferenceServerError(Exception):
    """Base of the server's domain exceptions; ``status_code`` is the HTTP status it maps to."""

    status_code = 500
    #: Set when the answer is to close the connection (a client too slow to wait for).
    close_connection = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Response headers that go with the error."""
        return {"Connection": "close"} if self.close_connection else {}


class InvalidInput(InferenceServerError):
    """The request cannot be parsed or does not match the model's inputs."""

    status_code = 400


class ModelNotFound(InferenceServerError):
    """The repository has no model (or version) of that name."""

    status_code = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        if version is None:
            super().__init__(f"model '{name}' not found in the model repository")
        else:
            super().__init__(f"model '{name}' version '{version}' not found in the model repository")
        self.name = name


class RequestTimeout(InferenceServerError):
    """The request body did not arrive in time (a slow or stalled client)."""

    status_code = 408


class PayloadTooLarge(InferenceServerError):
    """The request body is larger than the server accepts."""

    status_code = 413


class InferenceFailed(InferenceServerError):
    """The runtime failed on a request that passed validation: a server-side fault."""

    status_code = 500


class ModelNotReady(InferenceServerError):
    """The model exists but cannot serve now; the message says why (state and reason)."""

    status_code = 503

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"model '{name}' is not ready: {detail}")
        self.name = name
        self.detail = detail


class ModelReloadFailed(InferenceServerError):
    """New files of a ready model failed to load; it goes on serving the previous ones.

    400, as Triton answers a failed load: the request could not be done, the model is unharmed."""

    status_code = 400

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model '{name}' was not reloaded, it still serves its previous files: {reason}")
        self.name = name


class ServerNotReady(InferenceServerError):
    """The server is live but has not finished loading its models at start-up."""

    status_code = 503


class ServerBusy(InferenceServerError):
    """The server is at a limit it keeps to protect itself; the client may retry after ``retry_after_s``.

    A gateway takes it from a local replica as a signal to relay the request to the cloud.
    """

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {**super().headers, "Retry-After": str(self.retry_after_s)}


class OverBandwidthShare(InferenceServerError):
    """A camera sends faster than its share of the node's uplink: 429, come back after ``retry_after_s``."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        # Retry-After is whole seconds (RFC 9110); the exact figure goes along for clients that can use it.
        return {
            **super().headers,
            "Retry-After": str(max(1, math.ceil(self.retry_after_s))),
            "X-Edgeaigc-Retry-After-Ms": str(math.ceil(self.retry_after_s * 1000)),
        }


class ModelLoadError(Exception):
    """A model could not be loaded (missing file, corrupt ONNX, checksum mismatch, bad config).

    Never reaches HTTP as such: the repository records the message as the model's reason
    (state UNAVAILABLE) and requests for the model get :class:`ModelNotReady` with it.
    """


def error_body(message: str) -> dict[str, str]:
    """The protocol's error body."""
    return {"error": message}


def upstream_error_message(response: httpx.Response) -> str:
    """The message of an error another server answered: its :func:`error_body`, else the start of its text."""
    try:
        document = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return response.text[:200]


def register_error_handlers(app: FastAPI) -> None:
    """Map every domain exception (and FastAPI's own errors) to a ``{"error": ...}`` response."""

    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InferenceServerError)
        if exc.status_code >= 500:
            logger.warning("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(status_code=exc.status_code, content=error_body(exc.message), headers=exc.headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(status_code=exc.status_code, content=error_body(str(exc.detail)), headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        # FastAPI's request validation (query and body models) is bad input like any other: 400.
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
        )
        return JSONResponse(status_code=400, content=error_body(f"invalid request: {details}"))

    app.add_exception_handler(InferenceServerError, domain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
