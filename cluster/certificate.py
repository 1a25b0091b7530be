"""``edgeaigc cluster certificate``: a TLS Secret for the data plane without cert-manager.

The Secret is what a cert-manager ``Certificate`` writes — type ``kubernetes.io/tls`` with
``tls.crt``, ``tls.key`` and ``ca.crt`` — so the chart's ``tls.secretName`` takes either. Its CA
is the data plane's own (``dataplane-ca/`` in the cluster's directory, or in ``--output-dir``),
not the control plane's: a client certificate of that CA must never pass as a Kubernetes admin,
and trusting the data-plane CA must never mean trusting the API server's.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from edgeaigc.cluster.pki import issue_certificate, write_ca

CA_DIRECTORY = "dataplane-ca"


def tls_secret(name: str, namespace: str, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> dict[str, Any]:
    """The ``kubernetes.io/tls`` Secret (with ``ca.crt``) holding a certificate, its key and its CA."""

    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "edgeaigc"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": encoded(cert_pem), "tls.key": encoded(key_pem), "ca.crt": encoded(ca_pem)},
    }


def make_certificate(ca_parent: Path, names: list[str], common_name: str) -> tuple[bytes, bytes, bytes]:
    """A certificate for ``names`` from the data-plane CA under ``ca_parent`` (created once).
    Returns (certificate, key, CA certificate), PEM."""
    ca_directory = ca_parent / CA_DIRECTORY
    ca_cert, _ = write_ca(ca_directory, "edgeaigc-dataplane-ca")
    cert_pem, key_pem = issue_certificate(ca_directory, common_name, names)
    return cert_pem, key_pem, ca_cert.read_bytes()


def write_files(directory: Path, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
    """``tls.crt``, ``tls.key`` (mode 0600) and ``ca.crt`` in ``directory``, as a mounted Secret shows them."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert_pem)
    key_path = directory / "tls.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    (directory / "ca.crt").write_bytes(ca_pem)


def secret_json(secret: dict[str, Any]) -> str:
    return json.dumps(secret, indent=2)
