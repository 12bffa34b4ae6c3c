"""The Grafana dashboard and the Prometheus alert rules under ops/ use only series the server exposes.

Every method of ``ocs.metrics.Metrics`` is called once, so each labelled series has a sample, and the
registry's exposition is the set of names and labels a query may use. A renamed metric or label
fails here instead of leaving a blank panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.api.audit_trail import AuditTrail
from ocs.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "open-ocs.json"
ALERTS = ROOT / "ops" / "prometheus" / "open-ocs-alerts.yml"

# Labels Prometheus adds at scrape time and the histogram bucket label.
_SCRAPE_LABELS = frozenset({"job", "instance", "le"})
# Series Prometheus makes itself.
_PROMETHEUS_SERIES = frozenset({"up"})
_SERIES = re.compile(r"\b((?:ocs|process)_[a-z0-9_]+|up)\b(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _exposed() -> dict[str, frozenset[str]]:
    """Every sample name the server's registry exposes, with its label names."""
    metrics = Metrics()
    metrics.request_finished("CCR", "INITIAL", 2001, 0.002)
    metrics.request_shed("CCR", "UPDATE")
    metrics.duplicate_replayed()
    metrics.redis_call("charge", 0.001, failed=True)
    metrics.money_reserved("EUR", 10)
    metrics.money_committed("EUR", 10)
    metrics.money_credited("EUR", "top_up", 10)
    metrics.money_credited("EUR", "adjustment", -10)
    metrics.sessions_expired_by_tcc(1)
    metrics.spool_progress(1, 1, 1.0)
    metrics.watch(in_flight=lambda: 1.0, peers=lambda: 1.0, open_sessions=lambda: 1.0)
    metrics.http_finished("/health", "GET", 200, 0.001)
    metrics.server_request_answered("ASR", "5012")
    metrics.lifecycle_enforced("suspended", 0.01)
    # The audit trail's counter joins the server's registry (ocs/app.py); its engine is not used here.
    AuditTrail(cast(AsyncEngine, None), Path("audit-pending.jsonl"), registry=metrics.registry)
    exposed: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in exposed.items()}


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    for panel in dashboard["panels"]:
        queries.extend(target["expr"] for target in panel.get("targets", ()))
    return queries


def _alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _unknown_series(query: str, exposed: dict[str, frozenset[str]]) -> list[str]:
    """Series, selector labels and grouping labels in ``query`` that the server does not expose."""
    problems: list[str] = []
    used_labels: set[str] = set()
    for name, matchers in _SERIES.findall(query):
        if name in _PROMETHEUS_SERIES:
            continue
        if name not in exposed:
            problems.append(f"series {name}")
            continue
        used_labels.update(exposed[name])
        for label in _MATCHER.findall(matchers):
            if label not in exposed[name] | _SCRAPE_LABELS:
                problems.append(f"label {label} of {name}")
    for grouping in _GROUPING.findall(query):
        for label in (part.strip() for part in grouping.split(",") if part.strip()):
            if label not in used_labels | _SCRAPE_LABELS:
                problems.append(f"grouping label {label}")
    return problems


def test_every_dashboard_query_uses_exposed_series() -> None:
    exposed = _exposed()
    queries = _dashboard_queries()
    assert len(queries) >= 10
    problems = {query: found for query in queries if (found := _unknown_series(query, exposed))}
    assert problems == {}


def test_every_alert_uses_exposed_series_and_says_what_to_do() -> None:
    exposed = _exposed()
    rules = _alert_rules()
    assert len(rules) >= 5
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert _unknown_series(str(rule["expr"]), exposed) == [], rule["alert"]
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in ("critical", "warning", "info")
        assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"]


def test_dashboard_panels_are_laid_out_once() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("rate(ocs_diameter_requests_totl[5m])", "series ocs_diameter_requests_totl"),
        ('ocs_diameter_requests_total{result=~"5.*"}', "label result of ocs_diameter_requests_total"),
        ("sum by (zone) (rate(ocs_diameter_requests_total[5m]))", "grouping label zone"),
    ],
)
def test_the_check_finds_a_wrong_name(query: str, problem: str) -> None:
    assert _unknown_series(query, _exposed()) == [problem]
