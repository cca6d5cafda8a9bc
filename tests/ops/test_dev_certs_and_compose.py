"""scripts/dev-certs.sh's certificates and tokens, the compose TLS override, and that no key is ever committed."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from datetime import datetime, timezone
from ipaddress import ip_address
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from service.config import ServerSettings
from tests.ops.overlays import FILE_SETTINGS
from tests.ops.test_manifests import ROOT

pytestmark = pytest.mark.ops

PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----")


def tracked_files() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_private_key_or_dev_secret_is_committed() -> None:
    files = tracked_files()
    with_keys = [f.relative_to(ROOT) for f in files if f.is_file() and PRIVATE_KEY.search(f.read_bytes())]
    assert not with_keys, f"private keys in committed files: {with_keys}"
    names = {f.relative_to(ROOT).as_posix() for f in files}
    assert not [n for n in names if n.startswith("deploy/certs/")]
    assert not [n for n in names if re.search(r"\.(key|pem|p12|pfx)$|(^|/)tokens\.ya?ml$", n)], names
    # Where scripts/dev-certs.sh writes keys and tokens is git-ignored.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/certs/server/tls.key"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/certs/ must be in .gitignore"


def compose_services(*files: str) -> dict[str, Any]:
    """The compose files merged the way docker-compose merges these (maps merged, lists appended)."""
    merged: dict[str, Any] = {}
    for name in files:
        for service, spec in yaml.safe_load((ROOT / name).read_text())["services"].items():
            into = merged.setdefault(service, {})
            for key, value in spec.items():
                if isinstance(value, dict):
                    into[key] = {**into.get(key, {}), **value}
                elif isinstance(value, list):
                    into[key] = [*into.get(key, []), *value]
                else:
                    into[key] = value
    return merged


def test_compose_tls_override_matches_the_server_settings() -> None:
    tls = yaml.safe_load((ROOT / "deploy/docker-compose.tls.yml").read_text())["services"]["deepserve"]
    fields = set(ServerSettings.model_fields)
    names = [n for n in tls["environment"]]
    assert names and all(n.startswith("DEEPSERVE_") and n.removeprefix("DEEPSERVE_").lower() in fields for n in names)
    # The commented-out mutual TLS line names a real setting too.
    text = (ROOT / "deploy/docker-compose.tls.yml").read_text()
    assert re.search(r"#\s*DEEPSERVE_TLS_CLIENT_CA_FILE: (\S+)", text)

    server = compose_services("docker-compose.yml", "deploy/docker-compose.tls.yml")["deepserve"]
    env = server["environment"]
    settings = ServerSettings.model_validate({k.removeprefix("DEEPSERVE_").lower(): v for k, v in env.items()})
    assert settings.tls and settings.auth_tokens_file is not None and settings.health_port is not None
    assert settings.metrics_port == 8002, "Prometheus (deploy/prometheus/prometheus.yml) scrapes 8002 over HTTP"
    assert "8002" in (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    published = {p.rsplit(":", 1)[-1] for p in server["ports"]}
    assert str(settings.health_port) not in published, "the plaintext health port stays inside the container"

    mounts = {v.split(":")[1]: v.split(":") for v in server["volumes"]}
    for name in FILE_SETTINGS:
        path = re.search(rf"#?\s*{name}: (\S+)", text)
        assert path, name
        source, _, mode = mounts[str(PurePosixPath(path.group(1)).parent)]
        assert mode == "ro"
        # A folder mount (not single files): replaced files reach the running server.
        assert source == "./deploy/certs/server", "the folder scripts/dev-certs.sh writes for the server"
        assert PurePosixPath(path.group(1)).name in {"tls.crt", "tls.key", "client-ca.crt", "tokens.yaml"}
    # The image's health check asks the plaintext health port when there is one.
    assert "os.environ.get('DEEPSERVE_HEALTH_PORT')" in (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def dev_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("dev-certs") / "certs"
    subprocess.run([str(ROOT / "scripts/dev-certs.sh"), str(folder)], check=True, capture_output=True, timeout=60)
    return folder


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_dev_certs_verify_for_local_names(dev_certs: Path, name: str) -> None:
    ca, server = dev_certs / "client/ca.crt", dev_certs / "server/tls.crt"
    check = "-verify_ip" if name[0].isdigit() else "-verify_hostname"
    ok = subprocess.run(
        ["openssl", "verify", "-CAfile", ca, "-purpose", "sslserver", check, name, server],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    other = "10.9.9.9" if name[0].isdigit() else "example.com"
    wrong = subprocess.run(["openssl", "verify", "-CAfile", ca, check, other, server], capture_output=True, text=True)
    assert wrong.returncode != 0

    # The same with cryptography's (stricter, WebPKI-style) verifier, which gRPC's own checks resemble.
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    root, leaf = x509.load_pem_x509_certificate(ca.read_bytes()), x509.load_pem_x509_certificate(server.read_bytes())
    subject = x509.IPAddress(ip_address(name)) if name[0].isdigit() else x509.DNSName(name)
    verifier = PolicyBuilder().store(Store([root])).time(datetime.now(timezone.utc)).build_server_verifier(subject)
    assert verifier.verify(leaf, [])[-1] == root


def test_dev_certs_keys_client_cert_and_token(dev_certs: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def pair(cert: str, key: str) -> x509.Certificate:
        certificate = x509.load_pem_x509_certificate((dev_certs / cert).read_bytes())
        private = serialization.load_pem_private_key((dev_certs / key).read_bytes(), password=None)
        assert private.public_key() == certificate.public_key(), f"{key} is not the key of {cert}"
        return certificate

    server = pair("server/tls.crt", "server/tls.key")
    client = pair("client/client.crt", "client/client.key")
    usage = lambda c: set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
    assert usage(server) == {ExtendedKeyUsageOID.SERVER_AUTH} and usage(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    ca = x509.load_pem_x509_certificate((dev_certs / "client/ca.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    assert (dev_certs / "server/client-ca.crt").read_bytes() == (dev_certs / "client/ca.crt").read_bytes()

    # Only the token's digest is in what the server mounts; the token is for the client alone.
    token = (dev_certs / "client/token").read_text().strip()
    assert len(token) >= 32
    (entry,) = yaml.safe_load((dev_certs / "server/tokens.yaml").read_text())["tokens"]
    assert entry["sha256"] == hashlib.sha256(token.encode()).hexdigest() and entry["scopes"] == ["infer"]
    assert token not in "".join(p.read_text() for p in (dev_certs / "server").iterdir())
    # The CA key is never in the folder the container mounts, and private files are the owner's alone.
    assert not [p for p in (dev_certs / "server").iterdir() if p.name.startswith("ca.")]
    for private in ("ca/ca.key", "client/client.key", "client/token"):
        assert (dev_certs / private).stat().st_mode & 0o077 == 0, private
    for served in (dev_certs / "server").iterdir():
        assert served.stat().st_mode & 0o222 & ~0o200 == 0, f"{served.name} writable by others"
