"""Credentials of one deployment, made fresh for it and deleted with it: a CA, the
SuperLink's TLS certificate for the addresses it serves (signed by that CA), and, for
SuperNode authentication, one EC key pair per SuperNode (private key in OpenSSH format, as
`flower-supernode --auth-supernode-private-key` reads it; public key in PEM, as the Control
API's RegisterNode takes it). The SuperLink's one door to other hosts is `fl.gateway`."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
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
    node_keys: list[Path] = field(default_factory=list)  # private, by partition id (on disk)
    node_public_keys: list[bytes] = field(default_factory=list)  # PEM, by partition id
    # Private keys kept in memory instead, to be handed to the SuperNodes' hosts.
    node_private_keys: list[bytes] = field(default_factory=list, repr=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _private_bytes(key: ec.EllipticCurvePrivateKey, form: serialization.PrivateFormat
                   ) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> Path:
    """Write a secret readable by its owner only, from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def make_credentials(directory: Path, hosts: Sequence[str], nodes: int = 0,
                     keys_on_disk: bool = True) -> Credentials:
    """TLS for `hosts` (IP addresses), and `nodes` SuperNode key pairs: their private keys
    written to `directory` or, without `keys_on_disk`, only in `node_private_keys`."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    names = [x509.IPAddress(ipaddress.ip_address(h)) for h in dict.fromkeys(hosts)]
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    creds = Credentials(directory / "ca.pem", directory / "superlink.pem",
                        directory / "superlink.key")
    creds.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    creds.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(creds.key, _private_bytes(key, serialization.PrivateFormat.PKCS8))
    for i in range(nodes):
        node_key = ec.generate_private_key(ec.SECP384R1())
        private = _private_bytes(node_key, serialization.PrivateFormat.OpenSSH)
        if keys_on_disk:
            creds.node_keys.append(write_private(directory / f"supernode-{i}.key", private))
        else:
            creds.node_private_keys.append(private)
        creds.node_public_keys.append(node_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return creds
