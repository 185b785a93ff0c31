"""Workbook tiles and alert rules query only metrics and dimensions that shared_code/telemetry.py emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared_code import telemetry
from tests.infra.bicep_model import INFRA, bicep_files, loaded_text_files, parse

pytestmark = pytest.mark.unit

KQL_FILES = sorted([*INFRA.glob("workbook/*.kql"), *INFRA.glob("alerts/*.kql")])
METRIC_LITERAL = re.compile(r"""["'](imgclass\.[A-Za-z0-9_.]+)["']""")
DIMENSION_REFERENCE = re.compile(r"""customDimensions(?:\.(\w+)|\[\s*["'](\w+)["']\s*\])""")


def kql_problems(query: str) -> list[str]:
    """Names in a query that telemetry does not emit (empty when the query is consistent)."""
    problems = []
    metrics = set(METRIC_LITERAL.findall(query))
    problems += [f"unknown metric {m}" for m in sorted(metrics - set(telemetry.EMITTED_METRICS))]
    if "customMetrics" in query and not metrics:
        problems.append("customMetrics query names no metric")
    dimensions = {a or b for a, b in DIMENSION_REFERENCE.findall(query)}
    allowed = set().union(*(telemetry.EMITTED_METRICS.get(m, frozenset()) for m in metrics))
    problems += [f"dimension {d} is not emitted with {sorted(metrics)}" for d in sorted(dimensions - allowed)]
    return problems


def loaded_kql() -> set[Path]:
    loaded = set()
    for path in bicep_files():
        for relative in loaded_text_files(parse(path)):
            loaded.add((path.parent / relative).resolve())
    return loaded


def test_the_checker_catches_unknown_metrics_and_dimensions() -> None:
    assert kql_problems('customMetrics | where name == "imgclass.nope"') == ["unknown metric imgclass.nope"]
    bad_dimension = 'customMetrics | where name == "imgclass.rejections" | extend x = customDimensions.model_version'
    assert kql_problems(bad_dimension) == ["dimension model_version is not emitted with ['imgclass.rejections']"]
    assert kql_problems("customMetrics | summarize count()") == ["customMetrics query names no metric"]
    good = """customMetrics | where name == 'imgclass.rejections' | extend r = customDimensions["reason"]"""
    assert kql_problems(good) == []


@pytest.mark.parametrize("path", KQL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_query_names_only_emitted_metrics_and_dimensions(path: Path) -> None:
    assert kql_problems(path.read_text(encoding="utf-8")) == []


def test_every_query_file_is_loaded_by_bicep_and_every_loaded_file_exists() -> None:
    loaded = loaded_kql()
    assert all(path.exists() for path in loaded), [p for p in loaded if not p.exists()]
    assert {p.resolve() for p in KQL_FILES} == {p for p in loaded if p.suffix == ".kql"}


def test_workbook_has_the_operational_tiles() -> None:
    workbook = INFRA / "workbook"
    queries = {p.stem: p.read_text(encoding="utf-8") for p in workbook.glob("*.kql")}
    assert "percentile(duration, 95)" in queries["latency"] and "percentile(duration, 99)" in queries["latency"]
    used = set().union(*(METRIC_LITERAL.findall(q) for q in queries.values()))
    assert {telemetry.METRIC_CONFIDENCE, telemetry.METRIC_CLASSIFICATIONS, telemetry.METRIC_REJECTIONS,
            telemetry.METRIC_DRIFT_SHARE, telemetry.METRIC_RETRAINING_RUNS} <= used
    assert queries["requests"].lstrip("/ \n").count("requests") >= 1


def test_alerts_cover_drift_errors_latency_poison_retraining_and_feedback_accuracy() -> None:
    alerts = {p.stem for p in (INFRA / "alerts").glob("*.kql")}
    assert alerts == {"drift-detected", "http-5xx-rate", "latency-p95", "failed-results", "retraining-failed",
                      "feedback-accuracy"}


def _alert_rules() -> dict[str, dict[str, object]]:
    rules = parse(INFRA / "modules" / "alerts.bicep")["variables"]["rules"]["value"]
    return {str(rule["name"]): rule for rule in rules}


def test_drift_and_feedback_accuracy_alerts_read_what_telemetry_emits() -> None:
    """The drift alert counts drift_detected runs; the accuracy alert fires BELOW its threshold."""
    rules = _alert_rules()
    drift = (INFRA / "alerts" / "drift-detected.kql").read_text(encoding="utf-8")
    assert f'"{telemetry.METRIC_DRIFT_RUNS}"' in drift and telemetry.DIM_DRIFT_DETECTED in drift
    assert rules["drift-detected"]["operator"] == "GreaterThan" and rules["drift-detected"]["threshold"] == 0
    accuracy = (INFRA / "alerts" / "feedback-accuracy.kql").read_text(encoding="utf-8")
    assert f'"{telemetry.METRIC_FEEDBACK_ACCURACY}"' in accuracy
    rule = rules["feedback-accuracy"]
    assert rule["operator"] == "LessThan" and rule["measure"] == "FeedbackAccuracy" and "FeedbackAccuracy =" in accuracy
    assert "feedbackAccuracyThreshold" in json.dumps(rule["threshold"])


def test_alerts_need_no_email_and_can_use_an_existing_action_group() -> None:
    document = parse(INFRA / "modules" / "alerts.bicep")
    assert document["parameters"]["alertEmails"]["default"] == []
    assert document["parameters"]["actionGroupId"]["default"] == ""
    group = document["resources"]["actionGroup"]["config"]
    assert group["condition"] == {"function": {"type": "empty", "parameters": {"item_to_test": "actionGroupId"}}}
