"""The monitoring files against real processes: a `deepserve serve` subprocess with traffic, and the
Prometheus binary (loopback only, temporary data directory) scraping it with deploy/prometheus's scrape
job and rules. Every PromQL query of the Grafana dashboard, every recording and alert rule, and the
prometheus-adapter rule behind the HPA must evaluate without error and return data; every series they read
is one the running server exports. (That each alert fires when it should is promtool's part:
deploy/prometheus/tests, run by scripts/ops-check.sh and tests/ops/test_consistency.py.)
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scripts import ops_consistency
from service.client import TaskClient
from tests.ops.live_prometheus import PROMETHEUS, RULES, Prometheus, send_traffic, wait_until
from tests.ops.servers import ROOT, Server
from tests.tiny_models import make_repository
from tests.tiny_task_models import write_lm

pytestmark = pytest.mark.ops

DASHBOARD = ROOT / "deploy/grafana/dashboards/deepserve.json"
ADAPTER_VALUES = ROOT / "k8s/prometheus-adapter/values.yaml"
# Grafana's variables, as Grafana would expand them for "All" models and a 1s scrape interval.
GRAFANA_VARS = {"$model": ".*", "$__rate_interval": "1m"}
GENERATION = "deepserve_generation_"
# Series that exist only once something went wrong (the fixture's server is healthy): an alert that reads
# them is checked against the server's declared metric families instead of against data.
ON_FAILURE = {"deepserve_model_load_failures_total"}
GENERATION_MODEL = "tiny_lm"

if PROMETHEUS is None:
    pytest.skip(
        "the `prometheus` binary is not installed (Debian: apt-get install prometheus)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    root = tmp_path_factory.mktemp("prometheus")
    repo = make_repository(root / "models", ("add_sub", "token_sum"))
    write_lm(repo, GENERATION_MODEL)  # the generation series exist only for a model that generates
    server = Server(repo, root / "deepserve.log").start()
    prom: Prometheus | None = None
    try:
        server.wait_serving()
        prom = Prometheus(root, f"127.0.0.1:{server.metrics_port}")
        prom.wait_ready()
        # Prometheus starts scraping new targets a few seconds after it is ready.
        wait_until(lambda: prom.query('up{job="deepserve"} == 1'), 30)
        send_traffic(server.address)
        with TaskClient(server.address, timeout=30) as client:
            assert client.generate("The quick brown fox", max_new_tokens=8, model=GENERATION_MODEL).text()
        # Enough scrapes after the traffic for rate() over the 1m window and for every rule to be evaluated.
        wait_until(lambda: prom.query('sum(deepserve_requests_total{code="INVALID_ARGUMENT"}) >= 5'), 30)
        time.sleep(3)
        yield prom
    finally:
        if prom is not None:
            prom.stop()
        server.kill()


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def expand(expr: str, **overrides: str) -> str:
    for name, value in {**GRAFANA_VARS, **overrides}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unexpanded Grafana variable in {expr}"
    return expr


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[p for p, _ in dashboard_queries()])
def test_dashboard_query_returns_data(prometheus: Prometheus, panel: str, expr: str) -> None:
    result = prometheus.query(expand(expr))
    assert result, f"{panel}: no data for {expand(expr)}"
    if GENERATION not in expr:
        # Served models saw traffic: real numbers, not the NaN of an empty histogram.
        assert any(math.isfinite(v) for v in values(result)), f"{panel}: only NaN: {result}"
    # The per-model selection works the same with one concrete model (of the kind the panel shows).
    model = GENERATION_MODEL if GENERATION in expr else "add_sub"
    assert prometheus.query(expand(expr, **{"$model": model})), f"{panel}: no data for model {model}"


def test_model_variable_lists_served_models(prometheus: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "model")
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
    models = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
    assert {"add_sub", "token_sum", GENERATION_MODEL} <= set(models)


def test_generation_series_only_for_the_generation_model(prometheus: Prometheus) -> None:
    series = prometheus.query(f'{{__name__=~"{GENERATION}.*"}}')
    assert series and {r["metric"]["model"] for r in series} == {GENERATION_MODEL}


def all_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]


def test_rules_are_loaded_and_evaluate_without_error(prometheus: Prometheus) -> None:
    expected = {
        rule.get("record") or rule.get("alert")
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in all_rules(prometheus)), 15)
    rules = all_rules(prometheus)
    assert {r["name"] for r in rules} == expected
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok" or r.get("lastError")}
    assert not broken, broken


def recording_rules() -> list[tuple[str, str]]:
    return [
        (rule["record"], rule["expr"])
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]


@pytest.mark.parametrize(("record", "expr"), recording_rules(), ids=[r for r, _ in recording_rules()])
def test_recording_rule_has_data(prometheus: Prometheus, record: str, expr: str) -> None:
    assert prometheus.query(expr), f"{record}: expression returns no data"
    wait_until(lambda: prometheus.query(record), 15)
    if GENERATION not in expr:
        assert any(math.isfinite(v) for v in values(prometheus.query(record))), record


def selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression, with their label matchers (`name{a="b"}`)."""
    found = []
    for name in sorted(ops_consistency.promql_series(expr)):
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}\s*(\{{[^}}]*\}})?(?![\w:(])", expr):
            found.append(f"{name}{match.group(1) or ''}")
    return found


def test_alert_expressions_evaluate(prometheus: Prometheus) -> None:
    """Alert expressions are valid PromQL that return nothing while all is well; and they cannot be quiet for
    the wrong reason: every series selector in them (label matchers included) has data from the live server,
    so an alert on a misspelt metric or label value fails here (promtool's tests show each one firing)."""
    alerts = [r for r in all_rules(prometheus) if r["type"] == "alerting"]
    assert {a["name"] for a in alerts} == {r["alert"] for r in ops_consistency.rules(ROOT) if "alert" in r}
    for alert in alerts:
        prometheus.query(alert["query"])  # raises on a PromQL error
    firing = {a["name"] for a in alerts if a["state"] != "inactive"}
    assert not firing, f"healthy test traffic must not fire alerts: {firing}"
    empty = {}
    for alert in alerts:
        for selector in selectors(alert["query"]):
            if any(selector.startswith(name) for name in ON_FAILURE):
                continue  # no load failed here; test_every_series_read_is_exported_by_the_server covers it
            if not prometheus.query(selector):
                empty.setdefault(alert["name"], []).append(selector)
    assert not empty, f"alert expressions select series without data: {empty}"


def test_every_series_read_is_exported_by_the_server(prometheus: Prometheus) -> None:
    """The dashboard, the rules and prometheus-adapter read only series that the running server declares on
    its /metrics page (every metric family is listed there, with or without samples)."""
    with urllib.request.urlopen(f"http://{prometheus.target}/metrics", timeout=5) as reply:
        families = list(text_string_to_metric_families(reply.read().decode()))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    exported = {f.name + s for f in families for s in suffixes.get(f.type, ("",))}
    assert exported >= ON_FAILURE
    recorded = {r["record"] for r in ops_consistency.rules(ROOT) if "record" in r}
    reads = [rule["expr"] for rule in ops_consistency.rules(ROOT)]
    reads += [expr for _, expr in ops_consistency.dashboard_queries(ROOT)]
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    reads += [rule[key] for rule in adapter for key in ("seriesQuery", "metricsQuery")]
    read = set().union(*(ops_consistency.promql_series(expr) for expr in reads))
    assert read - recorded - {"up"} <= exported, read - recorded - {"up"} - exported


def test_prometheus_adapter_rules_return_per_target_values(prometheus: Prometheus) -> None:
    """The HPA's custom metric: prometheus-adapter's metricsQuery, with its template filled in the way the
    adapter does for one scrape target (here `instance` stands in for `pod`)."""
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert any(r["name"]["as"] == "deepserve_inflight_requests" for r in rules)
    for rule in rules:
        series = re.match(r"\w+", rule["seriesQuery"].strip("'\"")).group(0)  # type: ignore[union-attr]
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'job="deepserve"')
            .replace("<<.GroupBy>>", "instance")
        )
        result = prometheus.query(query)
        assert len(result) == 1 and set(result[0]["metric"]) == {"instance"}, (query, result)
