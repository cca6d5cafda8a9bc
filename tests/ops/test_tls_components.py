"""The TLS, tokens and health-port components (k8s/components) on each overlay, the -secure overlays, cert-manager."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from service.config import ServerSettings
from tests.ops.overlays import FILE_SETTINGS, NAMESPACES, container_and_volumes, namespaced_in, overlay
from tests.ops.test_manifests import PROBED_SERVICES, ROOT, build, server_env

pytestmark = pytest.mark.ops

# Component sets an overlay may list (tls-auth first: the others add to it).
COMBINATIONS = (("tls-auth",), ("tls-auth", "mtls"), ("tls-auth", "cert-manager"), ("tls-auth", "mtls", "cert-manager"))


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
