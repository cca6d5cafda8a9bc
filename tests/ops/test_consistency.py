"""scripts/ops_consistency.py on this checkout (the same checks `make ops-check` runs), and promtool's rule
tests when promtool is installed: every alert fires in a test case, and stays quiet in another, with a
runbook section of docs/runbooks.md. tests/ops/test_ops_check_mutations.py shows that these checks fail
on the breakages they exist for."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scripts import ops_consistency
from tests.ops.servers import ROOT

pytestmark = pytest.mark.ops

PROMTOOL = shutil.which("promtool")


@pytest.mark.parametrize("check", list(ops_consistency.CHECKS))
def test_consistency_check_passes(check: str) -> None:
    if check == "kubernetes monitoring" and shutil.which("kubectl") is None:
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    assert ops_consistency.run(ROOT, [check]) == {check: []}


def test_every_alert_has_a_firing_and_a_quiet_test_case_and_a_runbook() -> None:
    """Stated on its own, for the record: an alert without a test in which it fires may watch a metric that
    does not exist and never fire; its runbook link must lead to a section that says what to do."""
    alerts = {r["alert"]: r for r in ops_consistency.rules(ROOT) if "alert" in r}
    assert {"DeepserveTargetMissing", "DeepserveModelLoadFailed"} <= set(alerts)
    assert ops_consistency.check_alert_tests(ROOT) == []
    assert ops_consistency.check_runbooks(ROOT) == []
    sections = ops_consistency.anchors((ROOT / ops_consistency.RUNBOOKS).read_text())
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in sections


def test_target_missing_is_absent_style() -> None:
    """`up == 0` cannot see a target that is gone (it has no `up` series at all)."""
    (rule,) = [r for r in ops_consistency.rules(ROOT) if r.get("alert") == "DeepserveTargetMissing"]
    assert rule["expr"].startswith("absent(up{")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_checks_and_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    rules = sorted(str(p) for p in (ROOT / ops_consistency.RULES).glob("*.yml"))
    tests = sorted(str(p) for p in (ROOT / ops_consistency.RULE_TESTS).glob("*.yml"))
    for cmd in ([PROMTOOL, "check", "rules", *rules], [PROMTOOL, "test", "rules", *tests]):
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr


def test_generated_prometheus_rule_is_what_the_writer_writes() -> None:
    """Byte for byte, so that regenerating it never shows a diff nobody made."""
    path = ROOT / ops_consistency.PROMETHEUS_RULE
    assert path.read_text() == ops_consistency.prometheus_rule_text(ROOT)
