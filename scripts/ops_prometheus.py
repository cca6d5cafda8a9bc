"""Checks of scripts/ops_consistency.py on what Prometheus reads: metric names against service/metrics.py,
alert tests, runbooks, and the prometheus-adapter rules."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from scripts.ops_files import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    Problems,
    load_yaml,
    rules,
)


# ------------------------------------------------------------------------------------------- metrics
def exported_series(root: Path) -> set[str]:
    """The series names service/metrics.py exports, read from its source (nothing is imported, so this also
    works on a copy and without the project's dependencies): counters as <name>_total, histograms as
    _bucket, _sum and _count."""
    tree = ast.parse((root / "service/metrics.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        kind = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        name = node.args[0].value
        if not isinstance(name, str):
            continue
        if kind == "Counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "Gauge":
            names.add(name)
        elif kind == "Histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "Summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
    return names


PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
}


def promql_series(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (also with Grafana variables and prometheus-adapter templates)."""
    expr = re.sub(r"<<[^>]*>>", "", expr)  # prometheus-adapter's <<.Series>> etc.
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def dashboard_queries(root: Path) -> list[tuple[str, str]]:
    dashboard = json.loads((root / DASHBOARD).read_text())
    queries = [
        (f"panel {panel.get('title')!r}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("definition") or variable.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query
            # label_values(metric, label) and query_result(expr) read series like any query.
            query = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", query)
            query = re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", query)
            queries.append((f"variable ${variable['name']}", query))
    return queries


def check_metric_names(root: Path) -> Problems:
    exported = exported_series(root)
    recorded = {r["record"] for r in rules(root) if "record" in r}
    known = exported | recorded | PROMETHEUS_SERIES
    problems = []
    reads: list[tuple[str, str]] = [
        (f"{RULES}: {rule.get('record') or rule.get('alert')}", rule["expr"]) for rule in rules(root)
    ]
    reads += [(f"{DASHBOARD}: {where}", expr) for where, expr in dashboard_queries(root)]
    adapter = load_yaml(root / "k8s/prometheus-adapter/values.yaml")["rules"]
    for rule in adapter.get("custom", []):
        reads.append((f"prometheus-adapter {rule['name'].get('as')}: seriesQuery", rule["seriesQuery"]))
        reads.append((f"prometheus-adapter {rule['name'].get('as')}: metricsQuery", rule["metricsQuery"]))
    for where, expr in reads:
        for name in sorted(promql_series(expr) - known):
            problems.append(f"{where} reads {name}, which service/metrics.py does not export")
    return problems


# --------------------------------------------------------------------------------------- alert tests
def check_alert_tests(root: Path) -> Problems:
    """Every alert fires in some promtool test case and stays quiet in another; the series fed to the tests
    are ones the server exports (so a test cannot share a misspelling with its alert)."""
    alerts = [r["alert"] for r in rules(root) if "alert" in r]
    fires: set[str] = set()
    quiet: set[str] = set()
    problems = []
    known = exported_series(root) | PROMETHEUS_SERIES
    for path in sorted((root / RULE_TESTS).glob("*.yml")):
        for case in load_yaml(path).get("tests", []):
            for series in case.get("input_series", []):
                name = re.match(r"\s*([a-zA-Z_:][\w:]*)", series["series"])
                if name is None or name.group(1) not in known:
                    problems.append(f"{path.relative_to(root)}: input series {series['series']} is not exported")
            for test in case.get("alert_rule_test", []):
                (fires if test.get("exp_alerts") else quiet).add(test["alertname"])
    for alert in alerts:
        if alert not in fires:
            problems.append(f"alert {alert} has no promtool test case in which it fires")
        if alert not in quiet:
            problems.append(f"alert {alert} has no promtool test case in which it stays quiet (exp_alerts: [])")
    for name in sorted((fires | quiet) - set(alerts)):
        problems.append(f"{RULE_TESTS} tests an alert {name} that the rules do not have")
    return problems


# ------------------------------------------------------------------------------------------- runbooks
def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            found.add(text.replace(" ", "-"))
    return found


def check_runbooks(root: Path) -> Problems:
    problems = []
    page = root / RUNBOOKS
    if not page.exists():
        return [f"{RUNBOOKS} does not exist"]
    sections = anchors(page.read_text())
    for rule in rules(root):
        if "alert" not in rule:
            continue
        url = rule.get("annotations", {}).get("runbook_url", "")
        path, _, anchor = url.partition("#")
        if path != RUNBOOKS or not anchor:
            problems.append(f"alert {rule['alert']}: runbook_url {url!r} is not {RUNBOOKS}#<section>")
        elif anchor not in sections:
            problems.append(f"alert {rule['alert']}: {RUNBOOKS} has no section #{anchor}")
    # The page's own links: other pages in docs/ and their sections.
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"\w+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = page if not file else page.parent / file
        if not linked.exists():
            problems.append(f"{RUNBOOKS} links to {target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            problems.append(f"{RUNBOOKS} links to {target}: no such section")
    return problems


# --------------------------------------------------------------------------------- prometheus-adapter
def check_adapter(root: Path) -> Problems:
    problems = []
    exported = exported_series(root)
    custom = load_yaml(root / "k8s/prometheus-adapter/values.yaml").get("rules", {}).get("custom") or []
    if not custom:
        return ["k8s/prometheus-adapter/values.yaml has no rules.custom"]
    for rule in custom:
        series = re.match(r"\s*([a-zA-Z_:][\w:]*)", rule["seriesQuery"])
        name = series.group(1) if series else rule["seriesQuery"]
        if name not in exported:
            problems.append(f"prometheus-adapter seriesQuery {rule['seriesQuery']!r}: {name} is not exported")
        matches = rule.get("name", {}).get("matches", "")
        if not re.search(matches, name):
            problems.append(f"prometheus-adapter name.matches {matches!r} does not match the series {name}")
        if "<<.Series>>" not in rule["metricsQuery"] or "<<.LabelMatchers>>" not in rule["metricsQuery"]:
            problems.append(f"prometheus-adapter metricsQuery {rule['metricsQuery']!r} ignores the series or pod")
    return problems
