"""The gateway's credentials: the cameras' tokens it accepts, and how it trusts (and shows itself to) the cloud.

The relay to the cloud crosses a WAN: with a routing table whose cloud URLs are ``https://``, the
cloud server's certificate is verified against ``cloud_ca`` (the ``ca.crt`` of the cluster's TLS
Secret; default: the system's CAs), and with a client certificate the gateway can pass a cloud
server that requires mutual TLS. Local replicas, on the gateway's own node, stay plain HTTP.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgeaigc.inference.gateway.gateway import GatewaySettings
from edgeaigc.inference.tls import client_context


@dataclass(frozen=True)
class GatewaySecurity:
    """The ``edgeaigc gateway`` flags of authentication and TLS towards the cloud."""

    camera_tokens: Path | None = None
    """The cameras' tokens (:mod:`.camera_auth`); None: cameras are not authenticated (the twin, a demo)."""
    cloud_ca: Path | None = None
    """The CA that signs the cloud servers' certificates; None: the system's CAs."""
    cloud_client_cert: Path | None = None
    """The gateway's client certificate for a cloud server that requires one (mutual TLS)."""
    cloud_client_key: Path | None = None

    def relay_tls(self) -> ssl.SSLContext | str:
        """The client TLS context of the relay, or what is wrong with its files."""
        return client_context(self.cloud_ca, self.cloud_client_cert, self.cloud_client_key)


def relay_client(settings: GatewaySettings, security: GatewaySecurity) -> httpx.AsyncClient:
    """The HTTP client the gateway forwards with (local replicas and the cloud).

    Raises:
        ValueError: the TLS files cannot be used (the CLI checks them first and exits 2).
    """
    tls = security.relay_tls()
    if isinstance(tls, str):
        raise ValueError(tls)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        verify=tls,
    )
