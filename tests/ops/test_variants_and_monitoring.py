"""Kubernetes: the cpu and gpu overlays side by side in one cluster, the label kube-prometheus-stack selects
ServiceMonitors and PrometheusRules by, and k8s/monitoring (the PrometheusRule and the Grafana dashboard
ConfigMap) built from the very files docker compose uses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import ops_consistency
from tests.ops.overlays import NAMESPACES, Objects, overlay
from tests.ops.test_manifests import ROOT, build, by_kind

pytestmark = pytest.mark.ops

CLUSTER_SCOPED = {"Namespace"}


def keyed(objects: Objects) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    """By (kind, namespace, name): what identifies an object in a cluster."""
    return {(kind, o["metadata"].get("namespace"), name): o for (kind, name), o in objects.items()}


def with_all_components(tmp_path: Path, base: str) -> Path:
    components = ["tls-auth", *sorted({p.name for p in (ROOT / "k8s/components").iterdir()} - {"tls-auth"})]
    return overlay(tmp_path, base, tuple(components))


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected_pods(selector_owner: dict[str, Any], everything: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, Deployment name) of the pods an object selects, among the objects of both overlays."""
    kind, namespace = selector_owner["kind"], selector_owner["metadata"]["namespace"]
    spec = selector_owner["spec"]
    deployments = [o for o in everything if o["kind"] == "Deployment" and o["metadata"]["namespace"] == namespace]
    if kind == "HorizontalPodAutoscaler":
        ref = spec["scaleTargetRef"]
        return {(namespace, d["metadata"]["name"]) for d in deployments if d["metadata"]["name"] == ref["name"]}
    if kind == "ServiceMonitor":
        assert not spec.get("namespaceSelector"), "a ServiceMonitor of an overlay watches its own namespace only"
        services = [
            o
            for o in everything
            if o["kind"] == "Service"
            and o["metadata"]["namespace"] == namespace
            and matches(spec["selector"]["matchLabels"], o["metadata"].get("labels", {}))
        ]
        return set().union(*(selected_pods(s, everything) for s in services)) if services else set()
    selector = {
        "Service": lambda: spec["selector"],
        "PodDisruptionBudget": lambda: spec["selector"]["matchLabels"],
        "NetworkPolicy": lambda: spec["podSelector"]["matchLabels"],
    }[kind]()
    return {
        (namespace, d["metadata"]["name"])
        for d in deployments
        if matches(selector, d["spec"]["template"]["metadata"]["labels"])
    }


@pytest.mark.parametrize("variant", ["plain", "secure", "all-components"])
def test_cpu_and_gpu_overlays_apply_side_by_side(tmp_path: Path, variant: str) -> None:
    """Both overlays in one cluster: no object of one is an object of the other (so neither apply nor delete
    of one touches the other), and every Service, PDB, NetworkPolicy, HPA and ServiceMonitor acts on its own
    overlay's pods only."""
    builds = {}
    for base in ("cpu", "gpu"):
        source: str | Path = {"plain": base, "secure": f"{base}-secure"}.get(variant) or with_all_components(
            tmp_path, base
        )
        builds[base] = keyed(build(source))
    cpu, gpu = builds["cpu"], builds["gpu"]
    assert not set(cpu) & set(gpu), f"objects both overlays create: {sorted(set(cpu) & set(gpu), key=str)}"
    everything = [o for objects in builds.values() for o in objects.values()]
    for base, objects in builds.items():
        namespace = NAMESPACES[base]
        (ns,) = [o for (kind, _, _), o in objects.items() if kind == "Namespace"]
        assert ns["metadata"]["name"] == namespace
        for (kind, object_namespace, name), _ in objects.items():
            if kind not in CLUSTER_SCOPED:
                assert object_namespace == namespace, f"{base}: {kind}/{name} is in {object_namespace}"
        (deployment,) = [o for (kind, _, _), o in objects.items() if kind == "Deployment"]
        own = {(namespace, deployment["metadata"]["name"])}
        selecting = ("Service", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor")
        for (kind, _, name), o in objects.items():
            if kind in selecting:
                assert selected_pods(o, everything) == own, f"{base}: {kind}/{name} selects other pods"
        for (kind, _, name), o in objects.items():
            if kind == "Certificate" and "dnsNames" in o["spec"]:
                short = {"deepserve-grpc", "deepserve-http"}  # the Services' own names, without a namespace
                assert all(n in short or f".{namespace}" in n for n in o["spec"]["dnsNames"]), name


def comment_patches(path: Path) -> list[Any]:
    """The `patches:` example in a manifest's leading comment."""
    lines = [line.removeprefix("#") for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.strip() == "patches:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return list(yaml.safe_load("\n".join(b[indent:] for b in block))["patches"])


@pytest.mark.parametrize("name", ["cpu", "gpu", "cpu-secure", "gpu-secure"])
def test_servicemonitor_carries_kube_prometheus_stacks_release_label(name: str) -> None:
    monitor = by_kind(build(name), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_release_label_patch_in_the_servicemonitor_comment_works(tmp_path: Path) -> None:
    patches = comment_patches(ROOT / "k8s/base/servicemonitor.yaml")
    monitor = by_kind(build(overlay(tmp_path, "cpu", patches=patches)), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "my-prometheus"


def test_monitoring_builds_the_compose_rules_and_dashboard() -> None:
    objects = build(ROOT / "k8s/monitoring")
    assert {kind for kind, _ in objects} == {"PrometheusRule", "ConfigMap"}
    rule = by_kind(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = [
        g
        for p in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups, "regenerate: python3 scripts/ops_consistency.py --write"
    dashboard = by_kind(objects, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    text = (ROOT / "deploy/grafana/dashboards/deepserve.json").read_text()
    assert dashboard["data"] == {"deepserve.json": text}
    assert json.loads(dashboard["data"]["deepserve.json"])["uid"] == "deepserve"
    assert "-" not in dashboard["metadata"]["name"].removeprefix("deepserve-"), "no hash suffix: one ConfigMap, kept"
    for o in objects.values():
        assert o["metadata"]["namespace"] == "monitoring"
        # The same Prometheus must pick these and the overlays' ServiceMonitors.
        assert (
            o["metadata"]["labels"]["release"]
            == by_kind(build("cpu"), "ServiceMonitor")["metadata"]["labels"]["release"]
        )


def test_monitoring_overlay_in_its_comment_works(tmp_path: Path) -> None:
    """The comment at the top of k8s/monitoring/kustomization.yaml: another namespace and release name."""
    lines = (ROOT / "k8s/monitoring/kustomization.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#   resources:"))
    example = [line.removeprefix("#   ") for line in lines[start:] if line.startswith("#   ")]
    kustomization = yaml.safe_load("\n".join(example))
    kustomization["resources"] = [os.path.relpath(ROOT / "k8s/monitoring", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    for o in build(tmp_path).values():
        assert o["metadata"]["namespace"] == "observability"
        assert o["metadata"]["labels"]["release"] == "my-prometheus"


def test_no_overlay_ships_the_cluster_wide_monitoring() -> None:
    """Rules and dashboards are per cluster (k8s/monitoring): in both overlays they would be evaluated twice."""
    for name in ("cpu", "gpu", "cpu-secure", "gpu-secure"):
        kinds = {kind for kind, _ in build(name)}
        assert "PrometheusRule" not in kinds
        assert not any(
            o["metadata"].get("labels", {}).get("grafana_dashboard")
            for (k, _), o in build(name).items()
            if k == "ConfigMap"
        )


def test_prometheus_rule_file_is_generated_from_the_rules() -> None:
    assert ops_consistency.check_generated(ROOT) == []
