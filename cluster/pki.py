"""Certificates and keys for the local control plane (one CA, serving and client certs)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeaigc.cluster.network import HOST_ADDRESS, KUBERNETES_SERVICE_IP

_VALIDITY = datetime.timedelta(days=365)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    *,
    server_names: list[str] | None = None,
    client: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Python >= 3.13 verifies strictly (VERIFY_X509_STRICT): a leaf needs its issuer's key identifier.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if usages is None:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server_names:
        alternatives: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _new_ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    ca_key = _key()
    now = datetime.datetime.now(datetime.UTC)
    ca_name = _name(common_name)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def write_pki(directory: Path) -> None:
    """Create ``ca.crt``, ``apiserver.{crt,key}``, ``admin.{crt,key}``, ``sa.{key,pub}`` once."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "admin.crt").exists():
        return
    ca_key, ca_cert = _new_ca("edgeaigc-local-ca")
    _write_key(ca_key, directory / "ca.key")
    _write_cert(ca_cert, directory / "ca.crt")

    server_key = _key()
    server_names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        KUBERNETES_SERVICE_IP,
        HOST_ADDRESS,
    ]
    _write_key(server_key, directory / "apiserver.key")
    _write_cert(
        _issue(ca_key, ca_cert, _name("kube-apiserver"), server_key, server_names=server_names),
        directory / "apiserver.crt",
    )
    admin_key = _key()
    _write_key(admin_key, directory / "admin.key")
    _write_cert(
        _issue(ca_key, ca_cert, _name("edgeaigc-admin", "system:masters"), admin_key, client=True),
        directory / "admin.crt",
    )
    service_account_key = _key()
    _write_key(service_account_key, directory / "sa.key")
    (directory / "sa.pub").write_bytes(
        service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_node_credentials(directory: Path, node_name: str) -> tuple[Path, Path]:
    """A kubelet's client certificate (``system:node:<name>`` in ``system:nodes``, what the Node
    authorizer expects) and key, signed by the cluster's CA; written once. Returns (cert, key)."""
    cert_path, key_path = directory / f"node-{node_name}.crt", directory / f"node-{node_name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise TypeError(f"{directory / 'ca.key'} is not an RSA key")
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = _key()
    _write_key(key, key_path)
    _write_cert(_issue(ca_key, ca_cert, _name(f"system:node:{node_name}", "system:nodes"), key, client=True), cert_path)
    return cert_path, key_path


def write_ca(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A CA of its own (``ca.crt``, ``ca.key`` in ``directory``), created once. Returns (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        ca_key, ca_cert = _new_ca(common_name)
        _write_key(ca_key, key_path)
        _write_cert(ca_cert, cert_path)
    return cert_path, key_path


def issue_certificate(ca_directory: Path, common_name: str, names: list[str]) -> tuple[bytes, bytes]:
    """A certificate for ``names`` (DNS names or IP addresses) signed by the CA in ``ca_directory``
    (:func:`write_ca`), good for serving and as a client certificate (mutual TLS), as cert-manager
    issues them. Returns (certificate PEM, unencrypted PKCS#8 key PEM)."""
    ca_key = serialization.load_pem_private_key((ca_directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise TypeError(f"{ca_directory / 'ca.key'} is not an RSA key")
    ca_cert = x509.load_pem_x509_certificate((ca_directory / "ca.crt").read_bytes())
    key = _key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = _issue(ca_key, ca_cert, _name(common_name), key, server_names=names, usages=usages)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
