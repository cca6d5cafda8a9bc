"""Where scripts/ops_consistency.py finds the deployment files, and how it reads them (YAML, the Prometheus
rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RULES = "deploy/prometheus/rules"
RULE_TESTS = "deploy/prometheus/tests"
DASHBOARD = "deploy/grafana/dashboards/deepserve.json"
PROMETHEUS_RULE = "k8s/monitoring/prometheusrule.yaml"
OVERLAYS = ("cpu", "gpu", "cpu-secure", "gpu-secure")
RUNBOOKS = "docs/runbooks.md"
# The only path the server's metrics listener answers (service/metrics_http.py).
METRICS_PATH = "/metrics"
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

Problems = list[str]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_groups(root: Path) -> list[dict[str, Any]]:
    return [group for path in sorted((root / RULES).glob("*.yml")) for group in load_yaml(path)["groups"]]


def rules(root: Path) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(root) for rule in group["rules"]]
