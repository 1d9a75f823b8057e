"""Credentials of one deployment, made fresh for it and deleted with it: a CA, the
SuperLink's TLS certificate for the address it binds (signed by that CA), and, for
SuperNode authentication, one EC key pair per SuperNode (private key in OpenSSH format, as
`flower-supernode --auth-supernode-private-key` reads it; public key in PEM, as the Control
API's RegisterNode takes it)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID = datetime.timedelta(days=2)


@dataclass
class Credentials:
    ca: Path
    cert: Path
    key: Path
    node_keys: list[Path] = field(default_factory=list)  # private, by partition id
    node_public_keys: list[bytes] = field(default_factory=list)  # PEM, by partition id


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey,
               form: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_credentials(directory: Path, host: str, nodes: int = 0) -> Credentials:
    """TLS for `host` (an IP address), and `nodes` SuperNode key pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("sweeper trial CA"))
               .issuer_name(_name("sweeper trial CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + VALID)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    creds = Credentials(directory / "ca.pem", directory / "superlink.pem",
                        directory / "superlink.key")
    creds.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    creds.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(creds.key, key, serialization.PrivateFormat.PKCS8)
    for i in range(nodes):
        node_key = ec.generate_private_key(ec.SECP384R1())
        path = directory / f"supernode-{i}.key"
        _write_key(path, node_key, serialization.PrivateFormat.OpenSSH)
        creds.node_keys.append(path)
        creds.node_public_keys.append(node_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return creds
