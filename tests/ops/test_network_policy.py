"""The NetworkPolicy of each overlay: metrics only from monitoring, gRPC and HTTP together, the patches it documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.overlays import Objects, overlay
from tests.ops.test_manifests import ROOT, build, by_kind

pytestmark = pytest.mark.ops


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
