"""The dashboard, the alert rules and the runbook checked against the code and by promtool.

- ``promtool check rules`` and ``promtool test rules`` (each alert fires on some series and
  holds off on others: deploy/prometheus/alerts.test.yaml);
- every metric and label the dashboard's and the alerts' expressions name exists in the registry
  the roles build (IngestMetrics, ReviewMetrics on a fresh CollectorRegistry);
- every alert links a runbook section that exists; every dashboard panel has a data source and
  a query.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from stream_router.metrics import IngestMetrics, ReviewMetrics
from tests.deploy.conftest import DEPLOY, REPO, require_tool

ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "stream-router.json"
RUNBOOK = DEPLOY / "RUNBOOK.md"

# Labels the scrape adds to every series (Prometheus target labels, prometheus-operator's).
TARGET_LABELS = frozenset(
    {"namespace", "job", "instance", "pod", "container", "service", "endpoint"}
)

PROMQL_WORDS = frozenset(
    re.split(
        r"\s+",
        """
    sum min max avg count stddev stdvar topk bottomk quantile count_values group
    by without on ignoring group_left group_right and or unless bool offset
    rate irate increase delta idelta deriv predict_linear histogram_quantile time vector scalar
    abs ceil floor round clamp clamp_min clamp_max absent absent_over_time changes resets
    avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time
    quantile_over_time label_replace label_join timestamp sort sort_desc
    label_values inf nan
    """.strip(),
    )
)

IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def registry_series() -> dict[str, frozenset[str]]:
    """Series names the roles' registry exposes, with their label names.

    Every labelled metric gets one child so prometheus_client exposes its samples with their
    real names (``_total``, ``_created``, ``_bucket``, ``_sum``, ``_count``).
    """
    registry = CollectorRegistry()
    for holder in (IngestMetrics(registry), ReviewMetrics(registry)):
        for value in vars(holder).values():
            if (
                isinstance(value, MetricWrapperBase)
                and value._labelnames
                and not value._labelvalues
            ):
                value.labels(*(["x"] * len(value._labelnames)))
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


@dataclass
class Usage:
    """What one expression names: metrics, and labels (with the metric they were matched on)."""

    metrics: set[str] = field(default_factory=set)
    name_patterns: set[str] = field(default_factory=set)
    matchers: list[tuple[str | None, str]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def parse(expr: str) -> Usage:
    """The metrics and labels a PromQL expression (or Grafana's label_values) names."""
    usage = Usage()
    values = LABEL_VALUES.match(expr)
    if values:
        expr = values.group(1)
        usage.grouping.add(values.group(2))
    expr = re.sub(r"\$\{?\w+\}?", "x", expr)  # Grafana variables
    for match in LABEL_LIST.finditer(expr):
        usage.grouping.update(n.strip() for n in match.group(2).split(",") if n.strip())
    expr = LABEL_LIST.sub(" ", expr)
    for match in SELECTOR.finditer(expr):
        metric, body = match.group(1), match.group(2)
        if metric in PROMQL_WORDS:
            metric = None
        rest = MATCHER.sub(lambda m: "", body).strip()
        if rest:
            raise ValueError(f"cannot parse the label matchers {body!r} in {expr!r}")
        for matcher in MATCHER.finditer(body):
            label, op, value = matcher.groups()
            if label == "__name__":
                (usage.name_patterns if "~" in op else usage.metrics).add(value)
            else:
                usage.matchers.append((metric, label))
    expr = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range durations
    expr = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?[smhdwy]?\b", " ", expr)  # numbers, durations
    usage.metrics.update(w for w in IDENTIFIER.findall(expr) if w.lower() not in PROMQL_WORDS)
    return usage


def problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What an expression names that the registry does not have."""
    usage = parse(expr)
    found: list[str] = []
    known_labels: set[str] = set(TARGET_LABELS)
    for name in usage.metrics:
        if name in series:
            known_labels |= series[name]
        else:
            found.append(f"metric {name} is not exported")
    for pattern in usage.name_patterns:
        matching = [n for n in series if re.fullmatch(pattern, n)]
        if not matching:
            found.append(f"no exported metric matches {pattern}")
        for name in matching:
            known_labels |= series[name]
    if not usage.metrics and not usage.name_patterns:
        found.append("names no metric")
    for metric, label in usage.matchers:
        labels = series.get(metric, frozenset()) if metric else frozenset(known_labels)
        if label not in labels and label not in TARGET_LABELS:
            found.append(f"label {label} is not on {metric or 'these metrics'}")
    for label in sorted(usage.grouping - known_labels):
        found.append(f"label {label} is on none of {sorted(usage.metrics)}")
    return found


def alert_rules() -> Iterator[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    for group in data["groups"]:
        yield from group["rules"]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [p for p in panels if p["type"] != "row"]


def dashboard_expressions() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(list(alert_rules()))} rules found" in run.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    run = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a case where it fires, and a case (or series) where it must not."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test["alert_rule_test"]:
            expected = case.get("exp_alerts") or []
            if expected:
                fired.add(case["alertname"])
            # promtool fails on an unexpected alert, so series beyond the expected alerts
            # (or an empty expectation) are series that must stay quiet
            if not expected or len(test["input_series"]) > len(expected):
                quiet.add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"alerts without a firing test: {sorted(names - fired)}"
    assert names <= quiet, f"alerts without a quiet test: {sorted(names - quiet)}"


def test_parser_finds_a_wrong_metric_and_wrong_labels() -> None:
    series = registry_series()
    bad = (
        'sum by (route, colour) (rate(stream_router_review_outcome_total{status="Failed"}[5m]))'
        " / on (namespace)"
        ' sum(rate(stream_router_ingest_consumed_total{queue="q", job=~"$job"}[5m]))'
    )
    assert sorted(problems(bad, series)) == [
        "label colour is on none of ['stream_router_ingest_consumed_total', "
        "'stream_router_review_outcome_total']",
        "label queue is not on stream_router_ingest_consumed_total",
        "label route is on none of ['stream_router_ingest_consumed_total', "
        "'stream_router_review_outcome_total']",
        "label status is not on stream_router_review_outcome_total",
        "metric stream_router_review_outcome_total is not exported",
    ]
    good = (
        "histogram_quantile(0.99, sum by (le, watcher) "
        '(rate(stream_router_review_watcher_event_lag_seconds_bucket{watcher!="x"}[$__rate_interval])))'
    )
    assert parse(good).metrics == {"stream_router_review_watcher_event_lag_seconds_bucket"}
    assert problems(good, series) == []
    assert problems('label_values({__name__=~"stream_router_nothing_.*"}, job)', series) == [
        "no exported metric matches stream_router_nothing_.*"
    ]


def test_registry_exposes_suffixed_names() -> None:
    series = registry_series()
    assert "stream_router_review_outcomes_total" in series
    assert "stream_router_review_time_in_review_seconds_bucket" in series
    assert "stream_router_ingest_decision_latency_seconds_count" in series
    assert series["stream_router_review_outcomes_total"] == {
        "backend",
        "outcome",
        "status",
        "route",
    }


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_expressions_name_only_exported_metrics_and_labels(source: str) -> None:
    series = registry_series()
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else dashboard_expressions()
    assert exprs
    found = {expr: p for expr in exprs if (p := problems(expr, series))}
    assert not found, json.dumps(found, indent=2)


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_its_runbook_section() -> None:
    anchors = {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", RUNBOOK.read_text(), re.M)}
    for rule in alert_rules():
        assert rule.get("for"), f"{rule['alert']} has no for:"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        url = urlsplit(annotations["runbook_url"])
        assert (REPO / url.path) == RUNBOOK, annotations["runbook_url"]
        assert url.fragment == rule["alert"].lower(), annotations["runbook_url"]
        assert url.fragment in anchors, f"RUNBOOK.md has no section #{url.fragment}"


def test_dashboard_panels_have_a_datasource_and_a_query() -> None:
    data = dashboard()
    assert data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_counters_are_read_only_through_rate_or_increase() -> None:
    counted = re.compile(r"\b(rate|irate|increase)\(\s*stream_router_\w+_total(\{[^}]*\})?\[")
    for expr in dashboard_expressions() + [r["expr"] for r in alert_rules()]:
        if expr.lstrip().startswith("label_values("):
            continue
        assert "_total" not in counted.sub("", expr), f"a counter read raw: {expr}"
    assert "_total" in counted.sub("", "sum(stream_router_ingest_consumed_total)")
