"""deploy/prometheus: promtool accepts the rules and passes their unit tests, which cover every
alert both firing and not; the PrometheusRule holds the same groups and passes the Prometheus
Operator's models; the dashboard reads only series the rules record."""

from __future__ import annotations

import copy
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support import prometheus as prom

RULE_TESTS = sorted((prom.PROMETHEUS_DIR / "tests").glob("*.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prom.tool("promtool"), *args],
        cwd=prom.PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(prom.RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    rule_count = len(prom.rules("record")) + len(prom.rules("alert"))
    assert f"SUCCESS: {rule_count} rules found" in result.stdout


def test_the_rules_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    recorded: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
            for check in case.get("promql_expr_test", []):
                recorded |= set(re.findall(r"\b[a-z_]+:[a-z0-9_:]+", check["expr"]))
    alerts = {rule["alert"] for rule in prom.rules("alert")}
    assert alerts - fired == set(), "alerts no test sees firing"
    assert alerts - quiet == set(), "alerts no test sees quiet"
    assert recorded == {rule["record"] for rule in prom.rules("record")}, "untested records"


def test_every_alert_says_how_bad_what_and_what_to_do() -> None:
    for rule in prom.rules("alert"):
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert len(rule["annotations"]["runbook"]) > 100, rule["alert"]
    # Every series the rules read is the scrape job's: another job's metrics never count.
    for rule in [*prom.rules("record"), *prom.rules("alert")]:
        for selector in re.findall(r"\b(?:tensorgate_[a-z_]+|up)\{([^}]*)\}", rule["expr"]):
            assert f'job="{prom.JOB}"' in selector, rule["expr"]


def operator_rule() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(prom.OPERATOR_RULE.read_text())
    return manifest


def test_the_prometheus_rule_holds_the_same_groups() -> None:
    manifest = operator_rule()
    assert (manifest["apiVersion"], manifest["kind"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
    )
    assert manifest["metadata"]["namespace"] == "tensorgate"
    assert manifest["spec"]["groups"] == yaml.safe_load(prom.RULES.read_text())["groups"]


def test_the_prometheus_rule_passes_its_crd_models() -> None:
    from cloudcoil.models.prometheus_operator.v1 import PrometheusRule

    manifest = operator_rule()
    model = PrometheusRule.model_validate(manifest)
    # The models ignore unknown fields: a round trip that loses one shows it.
    assert model.model_dump(by_alias=True, exclude_unset=True) == manifest
    broken = copy.deepcopy(manifest)
    broken["spec"]["groups"][1]["rules"][0]["for"] = "10"  # no unit
    with pytest.raises(ValueError):
        PrometheusRule.model_validate(broken)


def test_the_dashboard_reads_only_recorded_series_that_exist() -> None:
    exprs = [expr for _, expr in prom.dashboard_queries()]
    read = {name for expr in exprs for name in re.findall(r"\b[a-z_]+:[a-z0-9_:]+", expr)}
    assert read, "the dashboard shows no recorded series"
    assert read <= {rule["record"] for rule in prom.rules("record")}
