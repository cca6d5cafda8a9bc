"""Certificates for the TLS tests, made with `cryptography`: a CA, server and client certificates it signs,
an expired server certificate, and a second CA whose certificates the first one's clients do not trust.

Keys are ECDSA P-256 (fast to generate). Nothing here is written to disk unless a test asks (`write`,
`replace_server_files` to rotate a server's files, `write_each_broken_pair` for pairs it cannot use).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_HOSTS = ("127.0.0.1", "localhost")
UNUSABLE = "TLS files changed but cannot be used; still serving the previous certificate"
"""What the server logs (logger service.tls, WARNING) when its files change to a pair it cannot use."""


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert: bytes
    key: bytes
    serial: int
    common_name: str

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """`<stem>.crt` and `<stem>.key` in `folder`; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert.write_bytes(self.cert)
        key.write_bytes(self.key)
        return cert, key


def replace_server_files(folder: Path, issued: Issued, in_place: bool) -> None:
    """Rotate `folder`'s server.crt/.key to `issued`: overwrite them (same inodes), or write new files and rename
    them over the old ones."""
    if in_place:
        issued.write(folder, "server")
        return
    issued.write(folder, "next")
    os.replace(folder / "next.crt", folder / "server.crt")
    os.replace(folder / "next.key", folder / "server.key")


def broken_pairs(first: Issued, second: Issued) -> dict[str, tuple[bytes, bytes]]:
    """(certificate, key) contents a server cannot use, by what went wrong while rotating `first` to `second`."""
    return {
        "certificate written, key not yet": (second.cert, first.key),
        "certificate half written": (second.cert[: len(second.cert) // 2], first.key),
        "key half written": (second.cert, second.key[: len(second.key) // 2]),
        "empty files": (b"", b""),
        "key in both files": (second.key, second.key),
    }


def write_each_broken_pair(
    folder: Path,
    pairs: dict[str, tuple[bytes, bytes]],
    caplog: pytest.LogCaptureFixture,
    still_serves: Callable[[str], None],
) -> None:
    """Writes each pair as `folder`'s server.crt/.key; after each, `still_serves(problem)` checks the server kept
    its last good certificate, and the server must have logged `UNUSABLE` once (under the caller's caplog level)."""
    for problem, (cert_pem, key_pem) in pairs.items():
        caplog.clear()
        (folder / "server.crt").write_bytes(cert_pem)
        (folder / "server.key").write_bytes(key_pem)
        still_serves(problem)
        assert [r.message for r in caplog.records] == [UNUSABLE], problem


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepserve tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


class CertAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "deepserve test CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self._cert.public_bytes(serialization.Encoding.PEM)

    def write(self, folder: Path, stem: str = "ca") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.crt"
        path.write_bytes(self.cert)
        return path

    def server(self, common_name: str = "deepserve server", *, expired: bool = False) -> Issued:
        """A server certificate for 127.0.0.1 and localhost (or one that expired yesterday)."""
        sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._issue(common_name, ExtendedKeyUsageOID.SERVER_AUTH, sans, expired)

    def client(self, common_name: str = "deepserve client") -> Issued:
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [], expired=False)

    def _issue(
        self, common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName], expired: bool
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        day = datetime.timedelta(days=1)
        start, end = (now - 10 * day, now - day) if expired else (now - day / 24, now + 7 * day)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial, common_name)
