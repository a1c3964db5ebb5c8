"""The chart's Prometheus alerting rules, checked and unit-tested by Prometheus' own
promtool (Debian's prometheus package): each alert fires on the series the workers and
the operator really export, with its labels and words, and stays quiet on a healthy
neighbour. The real Prometheus of e2e/test_prometheus.py loads the same file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).resolve().parents[1] / "charts/infleet/files/alerts/infleet-rules.yaml"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed: run scripts/bootstrap.sh")
    return tool


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


def case(inputs: list[dict[str, str]], at: str, alert: str, *fired: dict[str, Any]) -> Any:
    return {
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": alert,
                "exp_alerts": [{"exp_labels": f[0], "exp_annotations": f[1]} for f in fired],
            }
        ],
    }


REQ = "infleet_requests_total"
FAILING = [
    series(REQ, "0+1000x90", namespace="ns", model="m", pod="p", outcome="success"),
    series(REQ, "0+100x90", namespace="ns", model="m", pod="p", outcome="error"),
    series(REQ, "0+1000x90", namespace="ns", model="ok", pod="q", outcome="success"),
    series(REQ, "0+0x90", namespace="ns", model="ok", pod="q", outcome="error"),
]
FLEETS = [
    *(series(f"infleet_autoscaler_{n}", "3x30", namespace="ns", name="f") for n in
      ("replicas", "max_replicas", "desired_replicas")),
    series("infleet_autoscaler_replicas", "2x30", namespace="ns", name="g"),
    series("infleet_autoscaler_max_replicas", "3x30", namespace="ns", name="g"),
    series("infleet_autoscaler_desired_replicas", "2x30", namespace="ns", name="g"),
    series("infleet_autoscaler_metrics_missing", "1x30", namespace="ns", name="f"),
    series("infleet_autoscaler_metrics_missing", "0x30", namespace="ns", name="g"),
]  # fmt: skip
WORKERS = [
    series("infleet_ready", "0x30", namespace="ns", pod="p", model="m", version="1"),
    series("infleet_ready", "1x30", namespace="ns", pod="q", model="m", version="1"),
    series("infleet_cache_bypassed_total", "0+5x30", namespace="ns", model="m", mode="output",
           reason="breaker_open"),
    series("infleet_cache_bypassed_total", "0x30", namespace="ns", model="ok", mode="output",
           reason="breaker_open"),
]  # fmt: skip
NS_M = {"namespace": "ns", "model": "m"}
NS_F = {"namespace": "ns", "name": "f"}
TESTS = [
    case(FAILING, "70m", "InfleetErrorBudgetBurn", ({"severity": "critical", **NS_M}, {
        "summary": "m in ns burns its error budget fast",
        "description": "9.091% of requests to m failed over 5m (objective 99.9%): 2% of a "
        "30-day budget per hour. See rejections and errors by reason on the fleet dashboard.",
    })),
    case(FAILING, "70m", "InfleetErrorBudgetBurnSlow", ({"severity": "warning", **NS_M}, {
        "summary": "m in ns burns its error budget",
        "description": "9.091% of requests failed over 30m (objective 99.9%).",
    })),
    case(FLEETS, "20m", "InfleetFleetAtMaxReplicas", ({"severity": "warning", **NS_F}, {
        "summary": "InferenceDeployment ns/f is held at maxReplicas",
        "description": "The autoscaler wants at least maxReplicas (3) for 15m: raise "
        "spec.autoscaling.maxReplicas or expect queueing and rejections.",
    })),
    case(FLEETS, "10m", "InfleetAutoscalerMetricsMissing", ({"severity": "warning", **NS_F}, {
        "summary": "The autoscaler of ns/f is blind",
        "description": "Worker metrics have been missing or partial for 5m: the fleet does not "
        "scale down (and scales up on partial data only). Check the pods' /metrics or "
        "spec.autoscaling.metrics.prometheusUrl.",
    })),
    case(WORKERS, "10m", "InfleetWorkerNotReady", ({"severity": "warning", "pod": "p", **NS_M}, {
        "summary": "Worker ns/p is not Ready",
        "description": "The worker of m has not been Ready for 5m (loading, draining or "
        "failing): see its logs and Events.",
    })),
    case(WORKERS, "20m", "InfleetCacheDown", ({"severity": "warning", **NS_M}, {
        "summary": "The cache of m in ns is down",
        "description": "Workers serve without the Redis cache (circuit breaker open) for 5m: "
        "every request reaches the model. Check the Redis in cache.redis.",
    })),
]  # fmt: skip


def test_the_rules_file_is_valid() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_fires_on_real_series_names_and_only_there(tmp_path: Path) -> None:
    names = {
        rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]
    }
    assert names == {t["alert_rule_test"][0]["alertname"] for t in TESTS}  # every alert tested
    spec = tmp_path / "rules_test.yaml"
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": TESTS}
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = subprocess.run([promtool(), "test", "rules", str(spec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
