"""`infleet simulate -f`: one path with the operator, --set/--sweep, profiles, plots."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from infleet_operator import api
from infleet_operator.cli import main as infleet
from infleet_operator.scaler.controller import Autoscaler
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.manifest import load_fleet, snippet, with_sets
from infleet_operator.simulator.profile import Profile, load_profile, table_from_statistics
from infleet_operator.simulator.rehearse import Slo, parse_slo, rehearse
from infleet_operator.simulator.scenario import fleet_for_spec, setup_for_spec
from infleet_operator.simulator.traces import synthetic

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
AUTOSCALING = ROOT / "operator" / "infleet_operator" / "autoscaling"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_simulator_runs_the_operators_policy_for_each_example(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == api.KIND]
    assert docs, path
    profile = Profile(pod_start_seconds=37.0)
    for doc in docs:
        # The operator's timer: parse the object's spec, build the autoscaler for the
        # measured pod start time (status.podStartSeconds).
        parsed = api.InferenceDeploymentSpec.model_validate(doc["spec"])
        live = Autoscaler.for_spec(parsed.autoscaling, 37.0)
        # The simulator: the manifest file, a profile measuring the same start time.
        fleet = load_fleet(path, doc["metadata"]["name"])
        loop, config = setup_for_spec(
            fleet.spec.autoscaling, fleet_for_spec(fleet.spec, profile, FleetConfig())
        )
        assert loop.settings == live.loop.settings
        assert vars(loop.policy.config) == vars(live.loop.policy.config)  # type: ignore[attr-defined]
        assert loop.policy.bounds == live.loop.policy.bounds
        assert config.tick_s == parsed.autoscaling.interval_seconds
        assert config.scrape_at_tick and config.metric_lag_s == 0
        assert config.max_batch == parsed.batching.max_batch_size
        assert config.start_delay_s == 37.0


def test_policies_do_not_import_the_registry() -> None:
    """The package's import graph has no cycle: policies import config and observations only."""
    graph: dict[str, set[str]] = {}
    for f in AUTOSCALING.glob("*.py"):
        tree = ast.parse(f.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "infleet_operator.autoscaling."
            ):
                deps.add(node.module.rsplit(".", 1)[-1])  # type: ignore[union-attr]
        graph[f.stem] = deps

    def reach(start: str, seen: set[str]) -> set[str]:
        for d in graph.get(start, set()):
            if d not in seen:
                seen.add(d)
                reach(d, seen)
        return seen

    for module in graph:
        assert module not in reach(module, set()), f"import cycle through {module}"
    for policy in ("hpa", "kpa", "predictive", "oracle"):
        assert not {"registry", "policy", "spec"} & graph[policy]


def test_set_changes_the_spec_and_bad_values_name_the_field() -> None:
    fleet = load_fleet(EXAMPLES[0].parent / "encoder-gpu.yaml")
    assert fleet.spec.autoscaling.target_queue_depth_per_replica == 64
    changed = with_sets(fleet, ["autoscaling.targetQueueDepthPerReplica=16"])
    assert changed.spec.autoscaling.target_queue_depth_per_replica == 16
    assert fleet.spec.autoscaling.target_queue_depth_per_replica == 64  # not mutated
    with pytest.raises(ValueError, match=r"spec\.autoscaling\.maxReplicas"):
        with_sets(fleet, ["autoscaling.maxReplicas=0"])
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        with_sets(fleet, ["autoscaling.maxReplicas"])
    assert yaml.safe_load(snippet("autoscaling.predictive.targetUtilization", 0.5)) == {
        "spec": {"autoscaling": {"predictive": {"targetUtilization": 0.5}}}
    }


def test_parse_slo() -> None:
    assert parse_slo("500ms@99%") == Slo(0.5, 0.99)
    assert parse_slo("2s@99.9%") == Slo(2.0, 0.999)
    assert parse_slo("0.95") == Slo(0.5, 0.95)
    with pytest.raises(ValueError):
        parse_slo("500ms@150%")


def test_a_lower_utilisation_target_buys_attainment_with_replicas() -> None:
    fleet = load_fleet(ROOT / "manifests" / "examples" / "encoder-gpu.yaml")
    trace = synthetic("bursty", 1800, 250, seed=2)
    profile = Profile(pod_start_seconds=60.0)
    runs = [
        rehearse(
            with_sets(fleet, [f"autoscaling.predictive.targetUtilization={u}"]),
            trace,
            profile,
            FleetConfig(seed=2),
            Slo(),
        )
        for u in (0.4, 1.0)
    ]
    low, high = (r.summary for r in runs)
    assert low.replica_seconds > high.replica_seconds
    assert low.slo_attainment > high.slo_attainment
    assert low.gpu_hours == pytest.approx(low.replica_seconds / 3600)  # 1 GPU per pod


def test_profile_from_a_running_workers_statistics(mlp_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    status = tmp_path / "idep.json"
    status.write_text(json.dumps({"status": {"podStartSeconds": 41.5}}))
    out = tmp_path / "profile.json"
    url = f"http://{mlp_server.http_url}"
    args = ["profile", "--url", url, "--model", "mlp", "--status", str(status), "-o", str(out)]
    assert infleet(args) == 2 and not out.exists()  # an idle worker has executed no batch
    assert infleet([*args, "--drive", "2", "--batch-sizes", "1,4,16"]) == 0
    profile = load_profile(out)
    assert [b for b, _ in profile.service_table] == [1, 4, 16]
    assert all(0 < s < 5 for _, s in profile.service_table)
    assert profile.pod_start_seconds == 41.5 and profile.source == url
    assert infleet(["profile", "--url", url, "--model", "nope", "-o", str(out)]) == 2


def test_table_from_statistics_needs_batches() -> None:
    reply = {"model_stats": [{"name": "m", "batch_stats": []}]}
    with pytest.raises(ValueError, match="no batches"):
        table_from_statistics(reply, "m")


def test_simulate_a_manifest_on_a_counts_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    counts = synthetic("step", 1200, 200, seed=4).rate.round().astype(int)
    trace = tmp_path / "traffic.csv"
    trace.write_text("count\n" + "\n".join(map(str, counts)))
    plot = tmp_path / "out.png"
    example = str(ROOT / "manifests" / "examples" / "encoder-gpu.yaml")
    args = ["simulate", "-f", example, "--trace", str(trace), "--start-delay", "60"]
    assert infleet([*args, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "fleet encoder: predictive, 2..16 replicas, decision every 15 s" in out
    assert "GPU-h" in out and "scale actions:" in out
    assert plot.stat().st_size > 10_000
    sweep = "autoscaling.predictive.targetUtilization=0.3,0.5,0.9"
    assert infleet([*args, "--sweep", sweep, "--slo", "500ms@99%"]) == 0
    out = capsys.readouterr().out
    assert "sweep of autoscaling.predictive.targetUtilization" in out
    assert "cheapest setting meeting the SLO" in out or "no value meets the SLO" in out
    assert infleet([*args, "--set", "autoscaling.minReplicas=50"]) == 2
    assert "minReplicas" in capsys.readouterr().err
    cpu = str(ROOT / "manifests" / "examples" / "cpu-minimal.yaml")
    assert infleet(["simulate", "-f", cpu, "--trace", str(trace)]) == 0  # spec.replicas, fixed
    assert "autoscaling off: spec.replicas=" in capsys.readouterr().out
    on = ["--set", "autoscaling.enabled=true"]
    assert infleet(["simulate", "-f", cpu, "--trace", str(trace), *on]) == 0


def test_prometheus_range_reply_becomes_a_per_second_trace() -> None:
    from infleet_operator.simulator.prometheus_trace import (
        parse_duration,
        per_second_rate,
        range_query,
    )
    from infleet_operator.simulator.traces import from_values

    assert parse_duration("7d") == 7 * 86400 and parse_duration("90s") == 90
    with pytest.raises(ValueError, match="duration"):
        parse_duration("a week")
    query, step = range_query(7 * 86400, 'namespace="prod"')
    assert 7 * 86400 / step <= 11_000 and step % 15 == 0
    assert query.startswith('sum(rate(infleet_request_arrivals_total{namespace="prod"}[')
    reply = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1000, "10"], [1060, "30"], [1120, "NaN"]]}]}}  # fmt: skip
    rate = per_second_rate(reply, 60.0)
    assert len(rate) == 180 and rate[0] == 10 and rate[30] == pytest.approx(20) and rate[-1] == 0
    trace = from_values(rate, "rate", None, "prometheus")
    assert trace.duration == 180 and 1500 < len(trace.arrivals) < 3500
    with pytest.raises(ValueError, match="no infleet_request_arrivals_total"):
        per_second_rate({"status": "success", "data": {"result": []}}, 60.0)
