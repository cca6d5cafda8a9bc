"""TLS files that cannot be used stop start-up with a message naming the flag, not a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from service.errors import ConfigError
from service.tls import CertificateFiles
from tests.ops.servers import ANY_PORTS, serve_command
from tests.security.certs import CertAuthority
from tests.tiny_models import make_repository

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path, ca: CertAuthority, problem: str) -> tuple[Path, Path, Path | None]:
    cert, key = ca.server().write(folder, "server")
    client_ca = None
    if problem == "missing certificate":
        cert.unlink()
    elif problem == "certificate not PEM":
        cert.write_bytes(b"not a certificate\n")
    elif problem == "key not PEM":
        key.write_bytes(cert.read_bytes())
    elif problem == "key of another certificate":
        key.write_bytes(ca.server().key)
    elif problem == "encrypted key":
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        encrypted = serialization.BestAvailableEncryption(b"secret")
        key.write_bytes(loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encrypted))
    elif problem == "client CA missing":
        client_ca = folder / "nowhere.crt"
    elif problem == "client CA is not a CA":
        client_ca = cert
    return cert, key, client_ca


@pytest.mark.parametrize(
    ("problem", "flag", "says"),
    [
        ("missing certificate", "--tls-cert-file", "cannot read"),
        ("certificate not PEM", "--tls-cert-file", "holds no PEM certificate"),
        ("key not PEM", "--tls-key-file", "holds no PEM private key"),
        ("key of another certificate", "--tls-key-file", "does not match the certificate"),
        ("encrypted key", "--tls-key-file", "is encrypted"),
        ("client CA missing", "--tls-client-ca-file", "cannot read"),
        ("client CA is not a CA", "--tls-client-ca-file", "holds no CA certificate"),
    ],
)
def test_unusable_files_are_config_errors_naming_the_flag(
    ca: CertAuthority, tmp_path: Path, problem: str, flag: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        CertificateFiles(*_files(tmp_path, ca, problem))
    assert str(info.value).startswith(f"{flag}: ")
    assert says in str(info.value)


def test_serve_exits_with_the_message(ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.server().write(tmp_path, "server")
    key.write_bytes(ca.server().key)
    repo = make_repository(tmp_path / "models", names=("add_sub",))  # an empty one would stop it first
    command = serve_command(repo, *ANY_PORTS, "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"deepserve: --tls-key-file: the private key in {key} does not match the certificate in {cert}"
    )
    assert "Traceback" not in done.stderr
