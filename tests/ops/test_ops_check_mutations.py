"""Breakages that once passed every check unnoticed, applied one at a time to a copy of the deployment files:
each must make the ops checks fail. Each mutation names the check that catches it, and only that check runs
(milliseconds, or about a second with kubectl), instead of the whole of scripts/ops-check.sh per mutation:

| mutation                                          | caught by                                                |
| ------------------------------------------------- | -------------------------------------------------------- |
| ServiceMonitor selector or port name typo         | kubernetes monitoring (ops_consistency; kubectl)         |
| prometheus-adapter seriesQuery typo               | prometheus-adapter, metric names                         |
| alert on a metric that does not exist             | metric names; promtool test rules (the alert never fires)|
| compose scrape port changed (either side)         | compose scrape                                           |
| wrong Grafana data source URL (port or host)      | grafana provisioning                                     |
| misspelt dashboard metric                         | metric names                                              |
| Dockerfile COPY of a path .dockerignore excludes  | docker context                                           |

(The live tests in tests/ops/test_prometheus.py catch the metric and alert mutations a second way, against a
running server and Prometheus.) One more test runs the whole of scripts/ops-check.sh on one mutated copy, to
show that the script's exit code reports a failed check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts import ops_consistency
from tests.ops.servers import ROOT

pytestmark = pytest.mark.ops

# What the checks read: the deployment files, the server's metrics and settings, and the build context.
COPIED = ("deploy", "k8s", "docs", "service", "protos", "models", "scripts")
COPIED_FILES = ("docker-compose.yml", "Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "Makefile")
SKIP = shutil.ignore_patterns("__pycache__", "*.onnx", "*.onnx.data", "_generated", ".venv*")


@dataclass(frozen=True)
class Mutation:
    path: str
    old: str
    new: str
    checks: tuple[str, ...]
    """The checks of scripts/ops_consistency.py that must each fail."""
    count: int = 1


MUTATIONS = {
    "servicemonitor selector typo": Mutation(
        "k8s/base/servicemonitor.yaml",
        "app.kubernetes.io/component: metrics",
        "app.kubernetes.io/component: metric",
        ("kubernetes monitoring",),
    ),
    "servicemonitor port typo": Mutation(
        "k8s/base/servicemonitor.yaml", "- port: metrics", "- port: metric", ("kubernetes monitoring",)
    ),
    "prometheus-adapter seriesQuery typo": Mutation(
        "k8s/prometheus-adapter/values.yaml",
        "seriesQuery: 'deepserve_inflight_requests{",
        "seriesQuery: 'deepserve_inflight_request{",
        ("prometheus-adapter", "metric names"),
    ),
    "alert on a metric that does not exist": Mutation(
        "deploy/prometheus/rules/deepserve.yml",
        "expr: deepserve_model_ready == 0",
        "expr: deepserve_model_readiness == 0",
        ("metric names",),
    ),
    "compose scrape port changed": Mutation(
        "deploy/prometheus/prometheus.yml", "port: 8002", "port: 8003", ("compose scrape",)
    ),
    "compose server metrics port changed": Mutation(
        "docker-compose.yml",
        '      DEEPSERVE_GRACE_SECONDS: "10"\n',
        '      DEEPSERVE_GRACE_SECONDS: "10"\n      DEEPSERVE_METRICS_PORT: "9102"\n',
        ("compose scrape",),
    ),
    "grafana datasource port": Mutation(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "url: http://prometheus:9090",
        "url: http://prometheus:9091",
        ("grafana provisioning",),
    ),
    "grafana datasource host": Mutation(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "url: http://prometheus:9090",
        "url: http://localhost:9090",
        ("grafana provisioning",),
    ),
    "misspelt dashboard metric": Mutation(
        "deploy/grafana/dashboards/deepserve.json", "deepserve_queue_depth{", "deepserve_queue_dept{", ("metric names",)
    ),
    "dockerfile copies an ignored path": Mutation(
        "Dockerfile",
        "COPY models/ /models/\n",
        "COPY models/ /models/\nCOPY deploy/prometheus/ /etc/prometheus/\n",
        ("docker context",),
    ),
    "dockerignore drops a copied path": Mutation(".dockerignore", "!models/\n", "", ("docker context",)),
}


def copy_repository(destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    for folder in COPIED:
        shutil.copytree(ROOT / folder, destination / folder, ignore=SKIP, symlinks=True)
    for name in COPIED_FILES:
        shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("pristine") / "repo")


@pytest.fixture
def mutable(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def mutate(root: Path, mutation: Mutation) -> None:
    path = root / mutation.path
    text = path.read_text()
    assert text.count(mutation.old) >= mutation.count, f"{mutation.path} no longer has {mutation.old!r}"
    path.write_text(text.replace(mutation.old, mutation.new, mutation.count))


def needs_kubectl(checks: tuple[str, ...]) -> None:
    if "kubernetes monitoring" in checks and shutil.which("kubectl") is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")


def test_checks_pass_on_the_unmutated_copy(pristine: Path) -> None:
    """The control: a copy as it is passes, so each failure below is the mutation's doing."""
    checks = [c for c in ops_consistency.CHECKS if c != "kubernetes monitoring" or shutil.which("kubectl")]
    assert ops_consistency.run(pristine, checks) == {key: [] for key in checks}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_fails_the_checks(mutable: Path, name: str) -> None:
    mutation = MUTATIONS[name]
    needs_kubectl(mutation.checks)
    mutate(mutable, mutation)
    found = ops_consistency.run(mutable, mutation.checks)
    missed = [check for check, problems in found.items() if not problems]
    assert not missed, f"{name}: {missed} passed; found {found}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_on_a_missing_metric_fails_its_promtool_test(mutable: Path) -> None:
    """promtool alone, without the metric list: the alert's test feeds the real series, so it never fires."""
    mutate(mutable, MUTATIONS["alert on a metric that does not exist"])
    promtool = shutil.which("promtool")
    assert promtool is not None
    tests = sorted(str(p) for p in (mutable / ops_consistency.RULE_TESTS).glob("*.yml"))
    result = subprocess.run([promtool, "test", "rules", *tests], capture_output=True, text=True, cwd=mutable)
    assert result.returncode != 0
    assert "DeepserveModelNotReady" in result.stdout + result.stderr


def test_an_alert_without_a_firing_test_fails(mutable: Path) -> None:
    """A new alert with no promtool test in which it fires is a finding in itself."""
    rules = mutable / "deploy/prometheus/rules/deepserve.yml"
    rules.write_text(
        rules.read_text()
        + "\n      - alert: DeepserveUntested\n        expr: deepserve_queue_depth > 1000\n"
        + "        annotations:\n          runbook_url: docs/runbooks.md#deepserveuntested\n"
    )
    problems = ops_consistency.run(mutable, ["alert tests", "runbooks"])
    assert any("DeepserveUntested has no promtool test case in which it fires" in p for p in problems["alert tests"])
    assert any("no section #deepserveuntested" in p for p in problems["runbooks"])


def test_run_returns_the_commands_status() -> None:
    """scripts/ops-check.sh's run(): records a failure and returns the command's status (it returned 0)."""
    function = subprocess.run(
        ["sed", "-n", "/^run() {/,/^}/p", str(ROOT / "scripts/ops-check.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert function.strip()
    script = (
        function
        + 'failed=(); run good true; echo "good=$?"; run bad sh -c "exit 3"; echo "bad=$?"; echo "${failed[@]}"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["ok: good", "good=0", "FAILED: bad (exit 3)", "bad=3", "bad"]


def ops_tools_installed() -> bool:
    venv = ROOT / os.environ.get("OPS_VENV", ".venv-ops")
    tools = ("docker-compose", "promtool", "kubectl")
    return all(shutil.which(t) for t in tools) and all(
        (venv / "bin" / t).exists() for t in ("checkov", "kubernetes-validate")
    )


@pytest.mark.skipif(not ops_tools_installed(), reason="run `make ops-check` once to install its tools")
@pytest.mark.timeout(600)
def test_ops_check_script_exits_non_zero_on_a_mutation(mutable: Path) -> None:
    mutate(mutable, MUTATIONS["servicemonitor selector typo"])
    env = {**os.environ, "OPS_VENV": str(ROOT / os.environ.get("OPS_VENV", ".venv-ops")), "K8S_VERSIONS": "1.30.0"}
    result = subprocess.run(
        ["bash", str(mutable / "scripts/ops-check.sh")], capture_output=True, text=True, env=env, cwd=mutable
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("== summary", 1)[1]
    assert "FAILED: consistency" in summary
    assert "all ops checks passed" not in summary
