"""Checks of scripts/ops_consistency.py on Kubernetes: the generated PrometheusRule (and its `--write`), and the
ServiceMonitors and k8s/monitoring that kubectl kustomize builds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from scripts.ops_files import (
    DASHBOARD,
    METRICS_PATH,
    OVERLAYS,
    PROMETHEUS_RULE,
    RULES,
    Problems,
    load_yaml,
    rule_groups,
)


# ------------------------------------------------------------------------------ generated k8s files
class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/rules/*.yml by `python3 scripts/ops_consistency.py --write`: do not edit;
# edit the rules there (docker compose loads them as they are) and regenerate. `make ops-check` and
# tests/ops fail when this file and the rules differ. Applied with k8s/monitoring.
"""


def prometheus_rule(root: Path) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "deepserve", "labels": {"app.kubernetes.io/name": "deepserve"}},
        "spec": {"groups": rule_groups(root)},
    }


def prometheus_rule_text(root: Path) -> str:
    body = yaml.dump(prometheus_rule(root), Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
    return PROMETHEUS_RULE_HEADER + body


def check_generated(root: Path) -> Problems:
    path = root / PROMETHEUS_RULE
    if not path.exists():
        return [f"{PROMETHEUS_RULE} is missing: python3 scripts/ops_consistency.py --write"]
    if load_yaml(path) != prometheus_rule(root):
        return [
            f"{PROMETHEUS_RULE} differs from {RULES}: regenerate it with python3 scripts/ops_consistency.py --write"
        ]
    return []


# ----------------------------------------------------------------------------------------- kubernetes
Objects = dict[tuple[str, str], dict[str, Any]]


def kustomize(folder: Path) -> Objects:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder}: {out.stderr.strip()}")
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(out.stdout) if doc}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_service_monitor(name: str, objects: Objects) -> Problems:
    problems = []
    monitors = [o for (kind, _), o in objects.items() if kind == "ServiceMonitor"]
    if len(monitors) != 1 or monitors[0].get("apiVersion") != "monitoring.coreos.com/v1":
        return [f"{name}: expected one ServiceMonitor (monitoring.coreos.com/v1), found {len(monitors)}"]
    monitor = monitors[0]
    spec = monitor["spec"]
    if "release" not in monitor["metadata"].get("labels", {}):
        problems.append(f"{name}: the ServiceMonitor has no `release` label (kube-prometheus-stack selects by it)")
    if spec.get("namespaceSelector", {}).get("any"):
        problems.append(f"{name}: the ServiceMonitor selects Services in every namespace")
    deployments = [o for (kind, _), o in objects.items() if kind == "Deployment"]
    pod = deployments[0]["spec"]["template"] if deployments else {"metadata": {}, "spec": {"containers": []}}
    container = (pod["spec"]["containers"] or [{}])[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        configmap = objects.get(("ConfigMap", source.get("configMapRef", {}).get("name", "")))
        env.update((configmap or {}).get("data", {}))
    metrics_port = int(env.get("DEEPSERVE_METRICS_PORT", "8002"))
    container_ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    services = [
        o
        for (kind, _), o in objects.items()
        if kind == "Service"
        and selects(spec.get("selector", {}).get("matchLabels", {}), o["metadata"].get("labels", {}))
    ]
    if not services:
        problems.append(f"{name}: the ServiceMonitor's selector {spec.get('selector')} selects no Service")
    for endpoint in spec.get("endpoints", []):
        if endpoint.get("path", "/metrics") != METRICS_PATH:
            problems.append(
                f"{name}: the ServiceMonitor scrapes {endpoint.get('path')}; the server answers {METRICS_PATH}"
            )
        for service in services:
            ports = {p.get("name"): p for p in service["spec"].get("ports", [])}
            port = ports.get(endpoint.get("port"))
            svc = service["metadata"]["name"]
            if port is None:
                problems.append(f"{name}: the ServiceMonitor scrapes port {endpoint.get('port')!r}, which {svc} lacks")
                continue
            target = port.get("targetPort", port["port"])
            number = container_ports.get(target) if isinstance(target, str) else target
            if number != metrics_port:
                problems.append(
                    f"{name}: {svc} port {port['name']} reaches {target}, not the metrics port {metrics_port}"
                )
            if not selects(service["spec"].get("selector", {}), pod["metadata"].get("labels", {})):
                problems.append(f"{name}: {svc} does not select the server's pods")
    if not spec.get("endpoints"):
        problems.append(f"{name}: the ServiceMonitor has no endpoints")
    return problems


def check_kubernetes(root: Path) -> Problems:
    if shutil.which("kubectl") is None:
        print("skipped: kubernetes monitoring (kubectl is not installed)")
        return []
    problems = []
    releases = set()
    for overlay in OVERLAYS:
        try:
            objects = kustomize(root / "k8s/overlays" / overlay)
        except RuntimeError as error:
            problems.append(str(error))
            continue
        problems += check_service_monitor(overlay, objects)
        releases |= {
            o["metadata"].get("labels", {}).get("release") for (k, _), o in objects.items() if k == "ServiceMonitor"
        }
    try:
        monitoring = kustomize(root / "k8s/monitoring")
    except RuntimeError as error:
        return [*problems, str(error)]
    rule = [o for (kind, _), o in monitoring.items() if kind == "PrometheusRule"]
    if len(rule) != 1 or rule[0]["spec"] != prometheus_rule(root)["spec"]:
        problems.append(f"k8s/monitoring does not build one PrometheusRule carrying {RULES}")
    else:
        release = rule[0]["metadata"].get("labels", {}).get("release")
        if release is None or {release} != releases:
            problems.append(f"k8s/monitoring's PrometheusRule has release {release!r}; the ServiceMonitors {releases}")
    dashboards = [
        o
        for (kind, _), o in monitoring.items()
        if kind == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    expected = (root / DASHBOARD).read_text()
    if [list(d.get("data", {}).values()) for d in dashboards] != [[expected]]:
        problems.append(f'k8s/monitoring does not build one ConfigMap (grafana_dashboard: "1") holding {DASHBOARD}')
    return problems
