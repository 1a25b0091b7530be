"""TLS for the data plane: the servers' certificates (and optional client CA), the clients' trust.

Files are PEM, as a ``kubernetes.io/tls`` Secret holds them (what cert-manager writes: ``tls.crt``,
``tls.key`` and ``ca.crt``). A server takes ``--tls-cert``/``--tls-key``, and with
``--tls-client-ca`` requires a client certificate signed by that CA (mutual TLS). uvicorn builds
the server's context from the same files; :func:`check_server_files` loads them first so that an
unreadable file, a key that is not the certificate's or a CA file without a certificate is a
clear usage error (exit 2) instead of a traceback at start.

**Mutual TLS, per request.** The handshake asks for a client certificate but does not insist
(``CERT_OPTIONAL``: one that is presented must still verify against the CA, or the handshake fails);
:class:`ClientCertificateGate` then answers 401 to every request of a connection without one, except
the health probes (a model's readiness too) and ``/metrics``. A kubelet's HTTPS probe and a Prometheus scrape present no
client certificate: with the handshake insisting (``CERT_REQUIRED``), a cloud replica under mutual
TLS never turned ready and was never scraped. Those endpoints say nothing a client could abuse.
The protocol (:mod:`edgeaigc.inference.http_protocol`) puts the verified certificate's subject in
the ASGI scope's ``tls`` extension, where the gate reads it.

**Rotation.** cert-manager renews a certificate by rewriting the Secret; the kubelet swaps the
mounted files. :class:`CertificateReloader` polls the files and loads a changed pair into the
running server's context: handshakes after that use the new certificate, without a restart.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerTls:
    """What a server needs to speak TLS (the ``--tls-*`` flags)."""

    cert_file: Path
    """The server's certificate chain, PEM (``tls.crt``)."""
    key_file: Path
    """Its private key, PEM, unencrypted (``tls.key``)."""
    client_ca_file: Path | None = None
    """Clients must present a certificate signed by this CA (``ca.crt``); None: no client certificate asked."""

    def uvicorn_settings(self) -> dict[str, object]:
        """uvicorn's ``Config`` keywords for this (it builds the ``SSLContext`` itself)."""
        settings: dict[str, object] = {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
        if self.client_ca_file is not None:
            # Optional at the handshake, required per request by ClientCertificateGate (probes and scrapes
            # carry no client certificate).
            settings |= {"ssl_ca_certs": str(self.client_ca_file), "ssl_cert_reqs": ssl.CERT_OPTIONAL}
        return settings


def server_tls(cert: str | None, key: str | None, client_ca: str | None) -> ServerTls | str | None:
    """The ``--tls-cert/--tls-key/--tls-client-ca`` flags as :class:`ServerTls` (None: plain HTTP), or
    what is wrong with them."""
    if cert is None and key is None:
        return "--tls-client-ca needs --tls-cert and --tls-key" if client_ca else None
    if cert is None or key is None:
        return "--tls-cert and --tls-key go together"
    tls = ServerTls(Path(cert), Path(key), Path(client_ca) if client_ca else None)
    problem = check_server_files(tls)
    return problem or tls


def check_server_files(tls: ServerTls) -> str | None:
    """Load the files as the server will; what is wrong with them, or None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    problem = _load_chain(context, tls.cert_file, tls.key_file, "--tls-cert/--tls-key")
    if problem is None and tls.client_ca_file is not None:
        problem = _load_ca(context, tls.client_ca_file, "--tls-client-ca")
    return problem


def client_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | str:
    """A client's context: server certificates verified against ``ca_file`` (None: the system's CAs), and the
    client certificate to present (mutual TLS), or what is wrong with the files."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts only ca_file, not the system's CAs
        problem = _load_ca(context, ca_file, "CA file")
        if problem:
            return problem
    if (cert_file is None) != (key_file is None):
        return "a client certificate and its key go together"
    if cert_file is not None and key_file is not None:
        problem = _load_chain(context, cert_file, key_file, "client certificate/key")
        if problem:
            return problem
    return context


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path, what: str) -> str | None:
    for path in (cert_file, key_file):
        if not os.access(path, os.R_OK) or not path.is_file():
            return f"{what}: cannot read {path}"
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        # OpenSSL's reason says which: KEY_VALUES_MISMATCH, no start line (not PEM), ...
        return f"{what}: {cert_file} and {key_file} are not a PEM certificate and its key ({error.reason or error})"
    return None


def _load_ca(context: ssl.SSLContext, ca_file: Path, what: str) -> str | None:
    if not os.access(ca_file, os.R_OK) or not ca_file.is_file():
        return f"{what}: cannot read {ca_file}"
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as error:
        return f"{what}: {ca_file} holds no PEM certificate ({error.reason or error})"
    return None


class CertificateReloader:
    """Loads a renewed certificate and key into a running server's context (cert-manager rotation)."""

    def __init__(self, context: ssl.SSLContext, tls: ServerTls) -> None:
        self.context = context
        self.tls = tls
        self.reloads = 0
        self._seen = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return tuple(
                (s.st_ino, s.st_mtime_ns, s.st_size)
                for s in (os.stat(self.tls.cert_file), os.stat(self.tls.key_file))  # follows the ..data link
            )
        except OSError:
            return None

    def poll(self) -> bool:
        """Load the pair if either file changed; True when a new certificate is in use."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        try:
            # Checked on a scratch context first: a pair that does not load never touches the live
            # context (whatever OpenSSL would keep of it half-loaded).
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.tls.cert_file, self.tls.key_file)
            self.context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        except (OSError, ssl.SSLError) as error:
            # Mid-swap (a new certificate beside the old key) or broken: keep serving the last good pair.
            logger.warning(
                "renewed certificate %s not loaded (%s); keeping the previous one", self.tls.cert_file, error
            )
            return False
        self._seen = stamp
        self.reloads += 1
        logger.info("certificate %s reloaded", self.tls.cert_file)
        return True

    def watch(self, stop: threading.Event, interval_s: float = 10.0) -> None:
        """Poll until ``stop`` is set (run in a thread: uvicorn owns the event loop)."""
        while not stop.wait(interval_s):
            try:
                self.poll()
            except Exception:  # a reloader that dies would stop rotation silently
                logger.exception("certificate reload failed")


#: What a connection without a client certificate may still ask a mutual-TLS server: the probes of
#: the kubelet (the server's and a model's readiness) and the scrapes of Prometheus, neither of which
#: presents one. They tell whether something is up, nothing more.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
_MODEL_READY = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/ready")


def is_open_path(method: str, path: str) -> bool:
    """Whether a request needs no client certificate under mutual TLS (:data:`OPEN_PATHS`, a model's readiness)."""
    return path in OPEN_PATHS or (method == "GET" and _MODEL_READY.fullmatch(path) is not None)


def client_certificate_name(scope: dict[str, Any]) -> str | None:
    """The subject of the verified client certificate of the request's connection (ASGI ``tls`` extension)."""
    tls = scope.get("extensions", {}).get("tls") or {}
    name = tls.get("client_cert_name")
    return name if isinstance(name, str) and name else None


class ClientCertificateGate:
    """ASGI middleware of a mutual-TLS server: 401 to requests whose connection presented no client
    certificate, except :func:`is_open_path`. (One that was presented was verified at the handshake.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_open_path(scope["method"], scope["path"]) or client_certificate_name(scope):
            await self.app(scope, receive, send)
            return
        body = b'{"error":"a client certificate signed by the server\'s client CA is required (mutual TLS)"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
