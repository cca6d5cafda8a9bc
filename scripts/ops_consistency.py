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
import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
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
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "atan2", "inf", "nan", "start", "end",
}  # fmt: skip


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


def rule_groups(root: Path) -> list[dict[str, Any]]:
    return [group for path in sorted((root / RULES).glob("*.yml")) for group in load_yaml(path)["groups"]]


def rules(root: Path) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(root) for rule in group["rules"]]


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


# ------------------------------------------------------------------------------------------ compose
def dockerfile_env(root: Path) -> dict[str, str]:
    """ENV values of the Dockerfile (the runtime stage's win: later lines override earlier ones)."""
    text = (root / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if re.match(r"\s*ENV\s", line, re.IGNORECASE):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def server_setting(root: Path, service: dict[str, Any], name: str) -> str | None:
    """A DEEPSERVE_* setting as the compose service's container sees it: its environment, else the image's."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment if "=" in item)
    if name in environment:
        return str(environment[name])
    return dockerfile_env(root).get(name)


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            ports.add(int(spec["target"]))
        else:
            ports.add(int(str(spec).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def check_compose_scrape(root: Path) -> Problems:
    problems = []
    compose = load_yaml(root / "docker-compose.yml")["services"]
    config = load_yaml(root / "deploy/prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    job = jobs.get("deepserve")
    if job is None:
        return ["deploy/prometheus/prometheus.yml has no scrape job deepserve (the rules' job label)"]
    if job.get("metrics_path", "/metrics") != METRICS_PATH:
        problems.append(f"the deepserve job scrapes {job.get('metrics_path')}; the server answers only {METRICS_PATH}")
    targets: list[tuple[str, int]] = []
    for sd in job.get("dns_sd_configs", []):
        targets += [(name, int(sd["port"])) for name in sd["names"]]
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, _, port = target.rpartition(":")
            targets.append((host, int(port)))
    if not targets:
        problems.append("the deepserve job has no targets")
    for host, port in targets:
        service = compose.get(host)
        if service is None:
            problems.append(f"the deepserve job scrapes {host}:{port}, but compose has no service {host}")
            continue
        metrics_port = server_setting(root, service, "DEEPSERVE_METRICS_PORT")
        if metrics_port is None or int(metrics_port) != port:
            problems.append(
                f"the deepserve job scrapes {host}:{port}, but the server there serves metrics on {metrics_port} "
                "(DEEPSERVE_METRICS_PORT of the compose service, else of the Dockerfile)"
            )
        elif int(metrics_port) not in container_ports(service):
            problems.append(f"compose service {host} does not publish its metrics port {metrics_port}")
    return problems


# ------------------------------------------------------------------------------------------ grafana
def prometheus_port(service: dict[str, Any]) -> int:
    for arg in service.get("command") or []:
        if str(arg).startswith("--web.listen-address="):
            return int(str(arg).rsplit(":", 1)[-1])
    return 9090


def compose_mount(service: dict[str, Any], source: str) -> str | None:
    """Where a bind mount of `source` (a path relative to the compose file) lands in the container."""
    for volume in service.get("volumes", []):
        host, _, rest = str(volume).partition(":")
        if PurePosixPath(host.removeprefix("./")) == PurePosixPath(source):
            return rest.split(":")[0]
    return None


def check_grafana(root: Path) -> Problems:
    problems = []
    compose = load_yaml(root / "docker-compose.yml")["services"]
    provisioning = root / "deploy/grafana/provisioning"
    datasources = [
        ds
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in load_yaml(path).get("datasources", [])
    ]
    prometheus = [ds for ds in datasources if ds.get("type") == "prometheus"]
    if not prometheus:
        problems.append("deploy/grafana/provisioning provisions no Prometheus data source")
    for ds in prometheus:
        url = urlsplit(ds.get("url", ""))
        service = compose.get(url.hostname or "")
        image = str((service or {}).get("image", ""))
        if service is None or "prometheus" not in image:
            problems.append(f"Grafana data source {ds.get('name')}: {ds.get('url')} is not the compose Prometheus")
        elif url.scheme != "http" or (url.port or 80) != prometheus_port(service) or url.path not in ("", "/"):
            problems.append(
                f"Grafana data source {ds.get('name')}: {ds.get('url')}, but Prometheus listens on "
                f"http://{url.hostname}:{prometheus_port(service)}"
            )
    # The dashboard's datasource variable defaults to a provisioned data source's uid.
    dashboard = json.loads((root / DASHBOARD).read_text())
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            uid = (variable.get("current") or {}).get("value")
            if uid and uid not in {ds.get("uid") for ds in prometheus}:
                problems.append(f"the dashboard's data source defaults to uid {uid!r}, which is not provisioned")
    # The dashboard provider reads the folder compose mounts the dashboards into.
    grafana = next((s for s in compose.values() if "grafana" in str(s.get("image", ""))), None)
    mounted = compose_mount(grafana or {}, "deploy/grafana/dashboards")
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in load_yaml(path).get("providers", []):
            folder = provider.get("options", {}).get("path")
            if folder != mounted:
                problems.append(
                    f"Grafana dashboard provider reads {folder}; compose mounts the dashboards at {mounted}"
                )
    return problems


# ------------------------------------------------------------------------------------ docker context
def dockerignore_patterns(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore's patterns as (exception, regex)), with Docker's semantics: Go filepath.Match plus `**`,
    patterns relative to the context root, later patterns win."""
    patterns = []
    path = root / ".dockerignore"
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.find("]", i)
                regex += pattern[i : end + 1].replace("[!", "[^") if end > 0 else re.escape("[")
                i = end + 1 if end > 0 else i + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((exception, re.compile(regex + "$")))
    return patterns


def in_context(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a file (path relative to the context) is sent: a pattern matches the path or a parent of it."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exception, regex in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            included = exception
    return included


def copy_sources(root: Path) -> list[tuple[int, str]]:
    """(line, source) of every COPY/ADD of the Dockerfile that reads the build context."""
    sources = []
    lines = (root / "Dockerfile").read_text().splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        match = re.match(r"\s*(COPY|ADD)\s+(.*)", line, re.IGNORECASE)
        if not match:
            continue
        rest = match.group(2).strip()
        options = re.findall(r"--(\w[\w-]*)(?:=\S+)?\s+", rest)
        rest = re.sub(r"^(?:--\w[\w-]*(?:=\S+)?\s+)*", "", rest)
        if "from" in options:
            continue  # from another stage or image, not the context
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        sources += [(number, src) for src in args[:-1] if not re.match(r"\w+://", src)]
    return sources


def check_docker_context(root: Path) -> Problems:
    problems = []
    patterns = dockerignore_patterns(root)
    for line, source in copy_sources(root):
        relative = str(PurePosixPath(source.lstrip("./") or "."))
        target = root / relative
        if "*" in relative or "?" in relative:
            found = [p for p in root.glob(relative)]
        else:
            found = [target] if target.exists() else []
        if not found:
            problems.append(f"Dockerfile:{line}: COPY {source}: no such path in the build context")
            continue
        files = []
        for path in found:
            files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        sent = [f for f in files if in_context(f.relative_to(root).as_posix(), patterns)]
        if not sent:
            problems.append(f"Dockerfile:{line}: COPY {source}: .dockerignore excludes it from the build context")
    return problems


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
