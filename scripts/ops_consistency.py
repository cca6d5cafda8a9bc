#!/usr/bin/env python3
"""Consistency checks across the deployment files and the server, which no schema validator, linter or
promtool sees: each of these mistakes once passed every other check.

    python3 scripts/ops_consistency.py            # run every check on this checkout; exit 1 on a problem
    python3 scripts/ops_consistency.py --root DIR # on another copy (tests/ops/test_ops_check_mutations.py)
    python3 scripts/ops_consistency.py --write    # regenerate k8s/monitoring/prometheusrule.yaml

| check                 | what must hold                                                                   |
| --------------------- | -------------------------------------------------------------------------------- |
| metric names          | every series a rule, alert, dashboard panel, dashboard variable or prometheus-   |
|                       | adapter query reads is exported by service/metrics.py (or is `up`, or a          |
|                       | recording rule of deploy/prometheus/rules)                                       |
| alert tests           | every alert has a promtool test case where it fires and one where it does not,   |
|                       | fed only with series the server exports                                          |
| runbooks              | every alert has a runbook_url naming a section of docs/runbooks.md; the page's   |
|                       | own links resolve                                                                |
| prometheus-adapter    | each rule's seriesQuery metric exists and its name.matches selects it            |
| compose scrape        | deploy/prometheus/prometheus.yml scrapes the compose service on the port and     |
|                       | path the server's metrics listener uses there                                    |
| grafana provisioning  | the data source URL is the compose Prometheus (service name, port); the          |
|                       | dashboard's default data source and the provider's folder match compose          |
| docker context        | every Dockerfile COPY/ADD source exists and survives .dockerignore               |
| generated k8s files   | k8s/monitoring/prometheusrule.yaml carries exactly deploy/prometheus/rules       |
| kubernetes monitoring | (kubectl) in every overlay the ServiceMonitor selects the metrics Service, its   |
|                       | port and path reach the server's metrics listener, and it carries the release    |
|                       | label; k8s/monitoring builds the PrometheusRule and the dashboard ConfigMap from |
|                       | the compose files                                                                |

Needs Python 3.10+ and PyYAML; the kubernetes check needs kubectl >= 1.27 (skipped, and said so, without).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.ops_compose import check_compose_scrape, check_docker_context, check_grafana  # noqa: E402
from scripts.ops_files import PROMETHEUS_RULE, RULE_TESTS, RULES, RUNBOOKS, Problems, rules  # noqa: E402
from scripts.ops_kubernetes import check_generated, check_kubernetes, prometheus_rule_text  # noqa: E402
from scripts.ops_prometheus import (  # noqa: E402
    anchors,
    check_adapter,
    check_alert_tests,
    check_metric_names,
    check_runbooks,
    dashboard_queries,
    promql_series,
)

__all__ = [
    "CHECKS",
    "PROMETHEUS_RULE",
    "RULES",
    "RULE_TESTS",
    "RUNBOOKS",
    "anchors",
    "check_alert_tests",
    "check_generated",
    "check_runbooks",
    "dashboard_queries",
    "main",
    "prometheus_rule_text",
    "promql_series",
    "rules",
    "run",
]
"""What the tests and other scripts read from here (the checks live in scripts/ops_*.py)."""


CHECKS: dict[str, Callable[[Path], Problems]] = {
    "metric names": check_metric_names,
    "alert tests": check_alert_tests,
    "runbooks": check_runbooks,
    "prometheus-adapter": check_adapter,
    "compose scrape": check_compose_scrape,
    "grafana provisioning": check_grafana,
    "docker context": check_docker_context,
    "generated k8s files": check_generated,
    "kubernetes monitoring": check_kubernetes,
}


def run(root: Path, names: Iterable[str] = CHECKS) -> dict[str, Problems]:
    """Problems by check; a check that crashes on a broken file reports that as its problem."""
    found = {}
    for name in names:
        try:
            found[name] = CHECKS[name](root)
        except Exception as error:  # noqa: BLE001 - a malformed file is a finding, not a crash
            found[name] = [f"{type(error).__name__}: {error}"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository copy to check (default: this one)")
    parser.add_argument("--write", action="store_true", help=f"regenerate {PROMETHEUS_RULE} and exit")
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"run only these: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.checks) - set(CHECKS)
    if unknown:
        parser.error(f"unknown checks {sorted(unknown)}; choose from {list(CHECKS)}")
    if args.write:
        (args.root / PROMETHEUS_RULE).write_text(prometheus_rule_text(args.root))
        print(f"wrote {PROMETHEUS_RULE}")
        return 0
    failed = False
    for name, problems in run(args.root, args.checks or CHECKS).items():
        print(f"{'FAILED' if problems else 'ok'}: {name}")
        for problem in problems:
            print(f"    {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
