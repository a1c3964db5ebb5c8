"""The chart's Grafana dashboard ConfigMap (values switch, sidecar label) and the worker
PodMonitor. The dashboard's queries are evaluated against a real Prometheus in
e2e/test_prometheus.py."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from test_delivery_chart import by_kind, one, render

RULES = Path(__file__).resolve().parents[1] / "charts/infleet/files/alerts/infleet-rules.yaml"
DASHBOARD = (
    Path(__file__).resolve().parents[1] / "charts/infleet/files/dashboards/infleet-fleet.json"
)


def test_dashboard_configmap_only_when_switched_on() -> None:
    assert not [
        o for o in by_kind(render()).get("ConfigMap", []) if "dashboards" in o["metadata"]["name"]
    ]
    objs = render("grafana.dashboards.enabled=true", "grafana.dashboards.namespace=monitoring")
    cm = one(objs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(cm["data"]["infleet-fleet.json"])
    assert shipped == json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in shipped["panels"]}
    assert {"Offered vs served load", "Queue depth", "Cache hit ratio", "GPU memory"} <= titles


def test_dashboard_label_is_configurable() -> None:
    objs = render(
        "grafana.dashboards.enabled=true",
        "grafana.dashboards.label=my_dash",
        "grafana.dashboards.labelValue=yes",
    )
    assert one(objs, "ConfigMap")["metadata"]["labels"]["my_dash"] == "yes"


def test_worker_pod_monitor_with_the_prometheus_operator_api() -> None:
    assert "PodMonitor" not in by_kind(render())
    pm = one(render(extra=("--api-versions", "monitoring.coreos.com/v1")), "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "infleet-worker"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_alert_rules_as_a_prometheus_rule_with_the_operator_api() -> None:
    assert "PrometheusRule" not in by_kind(render())
    api = ("--api-versions", "monitoring.coreos.com/v1")
    rule = one(render("metrics.prometheusRule.labels.release=kps", extra=api), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    off = render("metrics.prometheusRule.enabled=false", extra=api)
    assert "PrometheusRule" not in by_kind(off)
