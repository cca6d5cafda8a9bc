"""Consistency of the deployment files with each other and with the server, checked on what kustomize
builds: names, ports, labels and timings that no schema validator can see across objects.
(Schema validation, promtool and checkov are in scripts/ops-check.sh.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import ServerSettings

pytestmark = pytest.mark.ops

ROOT = Path(__file__).resolve().parents[2]
# The -secure overlays add k8s/components/tls-auth (TLS, tokens, probes on the health port); their own
# checks are in tests/ops/test_tls_components.py and tests/ops/test_network_policy.py.
OVERLAYS = ("cpu", "gpu", "cpu-secure", "gpu-secure")
# The metric names the server exports (service/metrics.py), as Prometheus exposes them.
METRICS = {
    "deepserve_request_duration_seconds",
    "deepserve_requests_total",
    "deepserve_queue_duration_seconds",
    "deepserve_compute_duration_seconds",
    "deepserve_batch_size",
    "deepserve_queue_depth",
    "deepserve_queue_capacity",
    "deepserve_inflight_requests",
    "deepserve_rejected_requests_total",
    "deepserve_model_ready",
    "deepserve_model_load_failures_total",
    "deepserve_generation_time_to_first_token_seconds",
    "deepserve_generation_inter_token_latency_seconds",
    "deepserve_generation_tokens_total",
    "deepserve_generation_active_sequences",
    "deepserve_generation_waiting_sequences",
}
# The grpc.health.v1 name each probe asks for: readiness the overall "" (strict readiness: every model loaded),
# start-up and liveness "liveness" (start-up finished; a broken model must not restart the pod).
PROBED_SERVICES = {"startupProbe": "liveness", "readinessProbe": "", "livenessProbe": "liveness"}


def build(overlay: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """What kustomize builds from an overlay of k8s/overlays (by name) or from any kustomization folder."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    folder = overlay if isinstance(overlay, Path) else ROOT / "k8s/overlays" / overlay
    out = subprocess.run([kubectl, "kustomize", str(folder)], check=True, capture_output=True, text=True).stdout
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(out) if doc}


def by_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for (k, _), o in objects.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(params=OVERLAYS, scope="module")
def objects(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return build(request.param)


def server_env(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    (ref,) = [e["configMapRef"]["name"] for e in container["envFrom"]]
    return objects[("ConfigMap", ref)]["data"]


def test_configmap_holds_valid_server_settings(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    env = server_env(objects)
    assert all(k.startswith("DEEPSERVE_") for k in env)
    fields = {k.removeprefix("DEEPSERVE_").lower(): v for k, v in env.items()}
    settings = ServerSettings(**fields)  # validates every value; unknown keys are errors
    assert settings.host == "0.0.0.0", "the server must listen on the pod IP for probes and Services"


def test_ports_probes_and_services_agree(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    env = server_env(objects)
    pod = by_kind(objects, "Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {
        "grpc": int(env["DEEPSERVE_PORT"]),
        "metrics": int(env["DEEPSERVE_METRICS_PORT"]),
        "http": int(env["DEEPSERVE_HTTP_PORT"]),
    }
    if "DEEPSERVE_HEALTH_PORT" in env:  # the plaintext health listener (k8s/components/tls-auth)
        expected["health"] = int(env["DEEPSERVE_HEALTH_PORT"])
    assert ports == expected
    probed = ports.get("health", ports["grpc"])  # the kubelet's gRPC probes cannot speak TLS
    for probe, service in PROBED_SERVICES.items():
        assert container[probe]["grpc"] == {"port": probed, "service": service}, probe

    grpc_svc, metrics_svc = objects[("Service", "deepserve-grpc")], objects[("Service", "deepserve-metrics")]
    http_svc = objects[("Service", "deepserve-http")]
    assert grpc_svc["spec"]["clusterIP"] == "None", "gRPC clients balance over a headless Service's pod IPs"
    assert metrics_svc["spec"].get("clusterIP") != "None"
    assert http_svc["spec"].get("clusterIP") != "None", "HTTP/1.1 connections spread over a ClusterIP Service"
    scheme = "https" if "DEEPSERVE_TLS_CERT_FILE" in env else "http"
    assert [p["appProtocol"] for p in http_svc["spec"]["ports"]] == [scheme]
    for svc, port in ((grpc_svc, "grpc"), (metrics_svc, "metrics"), (http_svc, "http")):
        assert matches(svc["spec"]["selector"], pod["metadata"]["labels"])
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == [port]


def test_servicemonitor_scrapes_the_metrics_service(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    monitor = by_kind(objects, "ServiceMonitor")
    selected = [
        name
        for (kind, name), o in objects.items()
        if kind == "Service" and matches(monitor["spec"]["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    assert selected == ["deepserve-metrics"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_termination_outlasts_prestop_and_drain(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(server_env(objects)["DEEPSERVE_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain + 5
    assert pod["enableServiceLinks"] is False, "service links would set DEEPSERVE_METRICS_PORT=tcp://..."


def test_pod_is_non_root_with_read_only_root(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # /tmp is the only writable place; anything else mounted is a read-only Secret (k8s/components).
    for mount in container["volumeMounts"]:
        if mount["mountPath"] != "/tmp":
            assert "secret" in volumes[mount["name"]] and mount.get("readOnly") is True, mount
    assert "emptyDir" in volumes[next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp")]
    # The image's user (Dockerfile `USER 10001:10001`).
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()
    assert pod["securityContext"]["runAsUser"] == 10001


def test_hpa_and_pdb_target_the_deployment(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = by_kind(objects, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    custom = kinds["Pods"]["pods"]["metric"]["name"]
    adapter = yaml.safe_load((ROOT / "k8s/prometheus-adapter/values.yaml").read_text())["rules"]["custom"]
    assert custom in {r["name"]["as"] for r in adapter}, "prometheus-adapter must publish the HPA's metric"
    assert custom in METRICS
    pdb = by_kind(objects, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def test_gpu_overlay_requests_a_gpu_and_cuda() -> None:
    objects = build("gpu")
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert server_env(objects)["DEEPSERVE_DEVICE"] == "cuda"
    assert pod["containers"][0]["image"].endswith("-gpu")


def promql_metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(deepserve_\w+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n not in METRICS else n for n in names}


def test_dashboard_uses_only_server_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/deepserve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(promql_metric_names(e) for e in exprs))
    assert used <= METRICS, used - METRICS
    assert all('model=~"$model"' in e for e in exprs), "every panel follows the $model variable"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in panels)


def test_compose_and_k8s_settings_agree_with_the_image() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    server = compose["services"]["deepserve"]
    grace = float(server["environment"]["DEEPSERVE_GRACE_SECONDS"])
    stop = float(server["stop_grace_period"].removesuffix("s"))
    assert stop > grace, "docker must not SIGKILL before the drain ends"
    assert server["read_only"] is True
