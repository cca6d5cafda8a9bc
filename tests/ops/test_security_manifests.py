"""The deployment side of TLS, tokens and the health port (issue 11), checked on what kustomize and
docker-compose files say and on what scripts/dev-certs.sh makes: the kustomize components with each
overlay, the NetworkPolicy, the compose TLS override, the development certificates, and that no key
is ever committed. (The server side is tested in tests/security.)"""

from __future__ import annotations

import hashlib
import os
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
from tests.ops.test_manifests import PROBED_SERVICES, ROOT, build, by_kind, server_env

pytestmark = pytest.mark.ops

Objects = dict[tuple[str, str], dict[str, Any]]
COMPONENTS = ROOT / "k8s/components"
# Component sets an overlay may list (tls-auth first: the others add to it).
COMBINATIONS = (("tls-auth",), ("tls-auth", "mtls"), ("tls-auth", "cert-manager"), ("tls-auth", "mtls", "cert-manager"))
FILE_SETTINGS = ("DEEPSERVE_TLS_CERT_FILE", "DEEPSERVE_TLS_KEY_FILE", "DEEPSERVE_TLS_CLIENT_CA_FILE",
                 "DEEPSERVE_AUTH_TOKENS_FILE")  # fmt: skip
PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----")
# Each overlay has its own namespace, so that both can run side by side (k8s/overlays/gpu).
NAMESPACES = {"cpu": "deepserve", "gpu": "deepserve-gpu"}


def overlay(tmp_path: Path, base: str, components: tuple[str, ...] = (), patches: list[Any] | None = None) -> Path:
    """A throwaway overlay on k8s/overlays/<base> (kustomize wants relative paths to other folders)."""
    folder = tmp_path / f"{base}-{'-'.join(components) or 'plain'}"
    folder.mkdir()
    k8s = os.path.relpath(ROOT / "k8s", folder)
    kustomization: dict[str, Any] = {
        "resources": [f"{k8s}/overlays/{base}"],
        "components": [f"{k8s}/components/{c}" for c in components],
    }
    if patches:
        kustomization["patches"] = patches
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def container_and_volumes(objects: Objects) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    return pod["containers"][0], {v["name"]: v for v in pod["volumes"]}


def check_secret_files(env: dict[str, str], container: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> set[str]:
    """Every *_FILE setting names a file in a read-only, whole-volume Secret mount; returns the Secrets."""
    secrets = set()
    for name in FILE_SETTINGS:
        if name not in env:
            continue
        path = PurePosixPath(env[name])
        (mount,) = [m for m in container["volumeMounts"] if path.parent == PurePosixPath(m["mountPath"])]
        assert mount.get("readOnly") is True, mount
        # The kubelet never updates a subPath mount: rotation in place would silently stop.
        assert "subPath" not in mount and "subPathExpr" not in mount, mount
        secret = volumes[mount["name"]]["secret"]
        assert secret.get("defaultMode", 0o644) & 0o007 == 0, f"{mount['name']}: readable by others"
        assert secret.get("defaultMode", 0o644) & 0o222 == 0, f"{mount['name']}: writable"
        assert not secret.get("optional"), "a missing Secret must stop the pod, not start it without TLS"
        assert "items" not in secret or path.name in {i["path"] for i in secret["items"]}
        secrets.add(secret["secretName"])
    return secrets


def namespaced_in(objects: Objects, namespace: str) -> None:
    for (kind, name), o in objects.items():
        if kind != "Namespace":
            assert o["metadata"].get("namespace") == namespace, f"{kind}/{name} is not in {namespace}"


@pytest.mark.parametrize("components", COMBINATIONS, ids="+".join)
@pytest.mark.parametrize("base", ["cpu", "gpu"])
def test_components_build_on_each_overlay(tmp_path: Path, base: str, components: tuple[str, ...]) -> None:
    objects = build(overlay(tmp_path, base, components))
    env = server_env(objects)
    settings = ServerSettings.model_validate({k.removeprefix("DEEPSERVE_").lower(): v for k, v in env.items()})
    assert settings.tls and settings.auth_tokens_file is not None
    assert settings.model_control_mode == "none"
    assert (settings.tls_client_ca_file is not None) == ("mtls" in components)

    container, volumes = container_and_volumes(objects)
    expected = {"deepserve-tls", "deepserve-tokens"} | ({"deepserve-client-ca"} if "mtls" in components else set())
    assert check_secret_files(env, container, volumes) == expected
    assert not [k for k, _ in objects if k == "Secret"], "Secrets are created by the operator or cert-manager"

    # Probes on the plaintext health port, which is a named container port; gRPC stays on its own.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == int(env["DEEPSERVE_HEALTH_PORT"]) != ports["grpc"]
    for probe, service in PROBED_SERVICES.items():
        assert container[probe]["grpc"] == {"port": ports["health"], "service": service}, probe
    assert container["envFrom"] and "env" not in container, "settings come from the ConfigMap only"
    namespaced_in(objects, NAMESPACES[base])

    plain_container, _ = container_and_volumes(build(base))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # only the port moved
        moved = {**container[probe], "grpc": plain_container[probe]["grpc"]}
        assert moved == plain_container[probe], probe


@pytest.mark.parametrize("base", ["cpu", "gpu"])
def test_secure_overlays_are_the_plain_ones_with_tls_auth(base: str, tmp_path: Path) -> None:
    kustomization = yaml.safe_load((ROOT / f"k8s/overlays/{base}-secure/kustomization.yaml").read_text())
    assert kustomization["resources"] == [f"../{base}"]
    assert kustomization["components"] == ["../../components/tls-auth"]
    assert build(f"{base}-secure") == build(overlay(tmp_path, base, ("tls-auth",)))


@pytest.mark.parametrize("base", ["cpu", "gpu"])
def test_cert_manager_issues_the_mounted_secret_for_the_grpc_service(tmp_path: Path, base: str) -> None:
    objects = build(overlay(tmp_path, base, ("tls-auth", "cert-manager")))
    namespaced_in(objects, NAMESPACES[base])  # the issuers and certificates follow the overlay's namespace
    certificate = objects[("Certificate", "deepserve-tls")]["spec"]
    _, volumes = container_and_volumes(objects)
    assert certificate["secretName"] == volumes["tls"]["secret"]["secretName"]
    for service_name in ("deepserve-grpc", "deepserve-http"):  # the HTTP port speaks HTTPS with the same certificate
        service = objects[("Service", service_name)]["metadata"]
        name, namespace = service["name"], service["namespace"]
        names = {name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"}
        assert names <= set(certificate["dnsNames"])
    assert "server auth" in certificate["usages"]
    assert certificate["privateKey"]["rotationPolicy"] == "Always"
    issuer = certificate["issuerRef"]
    assert (issuer["kind"], issuer["name"]) in objects, "the issuer is part of the component"
    ca = objects[("Certificate", objects[(issuer["kind"], issuer["name"])]["spec"]["ca"]["secretName"])]["spec"]
    assert ca["isCA"] is True
    assert ca["secretName"] not in {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}, (
        "the CA key is never mounted into the server"
    )
    expires = lambda spec: int(spec["duration"].removesuffix("h"))  # noqa: E731
    renews = lambda spec: int(spec["renewBefore"].removesuffix("h"))  # noqa: E731
    assert 0 < renews(certificate) < expires(certificate) < expires(ca)


def metrics_and_grpc_rules(objects: Objects) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    policy = by_kind(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    by_port = lambda port: [r for r in policy["ingress"] if port in {p["port"] for p in r["ports"]}]  # noqa: E731
    # Every rule names its ports; none admits the health port (kubelet probes need no rule).
    assert all(r.get("ports") for r in policy["ingress"])
    assert not by_port("health") and not by_port(8003)
    return by_port("metrics"), by_port("grpc")


@pytest.mark.parametrize("name", ["cpu", "gpu", "cpu-secure", "gpu-secure"])
def test_metrics_only_from_the_monitoring_namespace(name: str) -> None:
    metrics, grpc = metrics_and_grpc_rules(build(name))
    (rule,) = metrics
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert "ipBlock" not in peer
    (rule,) = grpc
    assert "from" not in rule, "gRPC clients are admitted from anywhere unless an overlay narrows it"
    assert [p["port"] for p in rule["ports"]] == ["grpc", "http"], "HTTP clients share gRPC's rule (and its narrowing)"


def documented_patches() -> list[list[Any]]:
    """The `patches:` examples in the comment at the top of k8s/base/networkpolicy.yaml."""
    lines = [line.removeprefix("#") for line in (ROOT / "k8s/base/networkpolicy.yaml").read_text().splitlines()]
    examples = []
    for i, line in enumerate(lines):
        if line.strip() == "patches:":
            indent = len(line) - len(line.lstrip())
            block = [line]
            for following in lines[i + 1 :]:
                if len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following)
            examples.append(yaml.safe_load("\n".join(b[indent:] for b in block))["patches"])
    return examples


def test_networkpolicy_patches_in_its_comment_work(tmp_path: Path) -> None:
    narrow_grpc, move_monitoring = documented_patches()
    patched = overlay(tmp_path, "cpu-secure", patches=narrow_grpc + move_monitoring)
    metrics, grpc = metrics_and_grpc_rules(build(patched))
    assert grpc[0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]
    selector = metrics[0]["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "observability"}


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
    ok = subprocess.run(["openssl", "verify", "-CAfile", ca, "-purpose", "sslserver", check, name, server],
                        capture_output=True, text=True)  # fmt: skip
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
