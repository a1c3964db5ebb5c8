"""Predictive autoscaling on the real control plane, with real traffic.

The ``synthetic`` model's batches sleep, so on 2 CPU cores each replica adds
capacity as a GPU would. A traffic ramp must make the fleet grow before the
queue passes the target; when traffic stops the fleet must shrink back to
minReplicas without failing a single request; status and Events must tell it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from fleet.endpoints import EndpointWatcher
from fleet.operator import OperatorProcess, install_operator_prereqs
from fleet.recorder import RECORD_S, StatusRecorder
from fleet.scale_run import MIN, PER_REPLICA_RPS, RAMP, SPEC, TARGET_QUEUE
from fleet.sim_to_real import (
    compare,
    decision_phase,
    real_track,
    replay,
    sim_track,
    stamp_seconds,
    start_delays,
)
from fleet.traffic import FleetTraffic, ramp_schedule
from infleet_operator.simulator.profile import Profile, table_from_statistics
from infleet_operator.simulator.profile_cli import fetch_statistics
from kube_harness.testing import unique, wait_for

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "infleet.dev", "v1alpha1", "inferencedeployments"
STAMP_JITTER_S = 0.2  # decision stamps sit 0-8 ms after the grid (once 78 ms: a late wake)


@pytest.fixture(scope="module")
def operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    kubeconfig = install_operator_prereqs(cluster, tmp_path_factory.mktemp("scale-op"))
    op = OperatorProcess(
        kubeconfig, tmp_path_factory.mktemp("scale-oplogs"), name="infleet-scale-0"
    )
    op.start()
    op.wait_log("Resuming operations", timeout=60)
    yield op
    op.stop()


@pytest.fixture
def ns(cluster: Any) -> Iterator[str]:
    name = unique("e2e-scale")
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _scaled_events(core: Any, ns: str, name: str) -> list[str]:
    evs = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [e.message for e in evs.items if e.reason == "Scaled"]


def test_ramp_scales_up_ahead_of_the_queue_and_back_down_without_failures(
    cluster: Any, operator: OperatorProcess, ns: str, tmp_path: Path
) -> None:
    api = cluster.api_client()
    custom = client.CustomObjectsApi(api)
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    name = "scale-demo"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": SPEC,
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def ready() -> bool:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_for(ready, timeout=120, what="the fleet to be Ready")
    # kopf blocks the deletion of an object its autoscaler timer runs for until the timer
    # has stopped (docs/operator.md, Deletion; uninstall order in docs/install.md).
    meta = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)["metadata"]
    assert meta.get("finalizers") == ["infleet.dev/finalizer"], meta
    watcher = EndpointWatcher(api, ns, f"{name}-headless").start()
    traffic = FleetTraffic(lambda: watcher.addresses, "synthetic", port=8000)
    try:

        def serving() -> int:
            return len(watcher.addresses)

        with StatusRecorder(custom, ns, name, traffic.stats.t0, serving) as rec:
            asyncio.run(traffic.run(ramp_schedule(RAMP), RAMP[-1][0]))

            # Scale-down to minReplicas once traffic has stopped.
            def back_to_min() -> bool:
                dep = apps.read_namespaced_deployment(name, ns)
                return dep.spec.replicas == MIN and (dep.status.ready_replicas or 0) == MIN

            wait_for(back_to_min, timeout=150, interval=1, what="scale-down to minReplicas")
        # The profile of this run: a surviving worker's batch statistics.
        worker = watcher.addresses[0]
        statistics = fetch_statistics(f"http://{worker}:8000", "synthetic")
    finally:
        watcher.stop()
        asyncio.run(traffic.close())

    stats = traffic.stats
    print(f"\nserved {stats.total_ok}, failed {stats.total_failed}; kinds {stats.error_kinds()}")
    for t, q, r, d in rec.samples[:: int(2 / RECORD_S)]:
        print(f"  t={t:5.1f}s queue={q} ready={r} desired={d}")
    assert stats.total_ok > 5000
    assert stats.total_failed == 0, stats.failures[:5]

    # The first scale-up came ahead of saturation: while the offered rate was still below
    # what one replica serves (a reactive policy waits for the queue to build).
    first_up = next(
        (i for i, (_, _, r, d) in enumerate(rec.samples) if d is not None and d > max(r, MIN)),
        None,
    )
    assert first_up is not None, "the autoscaler never scaled up"
    t_up = rec.samples[first_up][0]
    offered = ramp_schedule(RAMP)(t_up)
    assert offered < PER_REPLICA_RPS, (
        f"first scale-up at t={t_up:.1f}s with {offered:.0f} req/s offered: one replica "
        f"serves {PER_REPLICA_RPS:.0f}"
    )
    # For the record (not asserted: with batch-8 granularity and Poisson arrivals one
    # full batch waiting passes a queue target of 8 by chance at 80% load).
    over = next(
        (t for t, q, r, _ in rec.samples if q is not None and q / max(r, 1) > TARGET_QUEUE),
        None,
    )
    print(f"first scale-up t={t_up:.1f}s at {offered:.0f} req/s; queue first over target: {over}")
    assert max(r for _, _, r, _ in rec.samples) >= 2

    # Status and Events tell the story.
    messages = _scaled_events(core, ns, name)
    assert any(m.startswith("Scaled up from 1") for m in messages), messages
    assert any(m.startswith("Scaled down") for m in messages), messages
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    auto = obj["status"]["autoscaler"]
    assert auto["policy"] == "predictive"
    assert auto["history"] and auto["history"][-1]["toReplicas"] == MIN
    assert obj["metadata"]["generation"] == 1  # the operator never wrote the spec

    # Sim-to-real: the simulator, given this run's arrivals and this run's measured profile,
    # predicts what the autoscaler did.
    end = rec.samples[-1][0]
    last = int(end)
    counts = [stats.seconds[s].sent if s in stats.seconds else 0 for s in range(last + 1)]
    pod_start = sorted(rec.pod_start)[len(rec.pod_start) // 2]
    table = table_from_statistics(statistics, "synthetic")
    profile = Profile(table, pod_start, "synthetic", "cpu (synthetic)", f"http://{worker}:8000")
    (tmp_path / "profile.json").write_text(profile.to_json())
    (tmp_path / "arrivals.csv").write_text("count\n" + "\n".join(map(str, counts)) + "\n")
    # Both sides compare the same event: the desired count written at a decision. The real
    # one from the operator's own record (status.autoscaler.history, stamped when it decided,
    # to the millisecond), the simulated one on the operator's clock: its timer decides on a
    # fixed grid whose phase is read from the decision instants seen in this run. Each new
    # pod starts serving in the simulation as long after its decision as it did here.
    period = SPEC["autoscaling"]["intervalSeconds"]
    history = auto["history"]
    assert history[0]["fromReplicas"] == MIN, history  # the record covers the whole run
    real = real_track(history, rec.wall_at_t0, MIN, end)
    instants = [stamp_seconds(d, rec.wall_at_t0) for d in rec.decisions]
    phase = decision_phase([t for t in instants if 0 <= t <= end], period)
    delays = start_delays(history, rec.wall_at_t0, rec.serving)
    simulated = replay(name, SPEC, stats.send_times, end, profile, MIN, phase, delays)
    result = compare(real, sim_track(simulated, MIN))
    print(
        f"sim-to-real (profile {profile.to_json()}; decision phase {phase:.2f}s of {period}s"
        f" from {len(instants)} decisions seen; pod starts {[round(d, 1) for d in delays]} s"
        f"):\n{result.report()}"
    )
    # Tolerances (issue 16's): replica-seconds within 15%, peak within 1, and the time the
    # fleet was first asked for each count within one decision period. Both sides decide on
    # the same grid (the operator reads its metrics on it, rates timed at the read) and
    # learn capacity only from a lasting backlog, so a gap is a whole number of periods
    # (plus the stamps' ms off the grid). Near saturation the live queue stands ~2x the
    # simulated one (a replica serves ~73 req/s live, ~80 by its batch statistics), which
    # moves a threshold crossing by a few req/s: on the 70 s ramp used before that was two
    # decisions in 1 of 14 runs (0/0/4.0 s), hence the ramp of fleet/scale_run.RAMP, steep
    # where the thresholds lie. On it, 6 of 6 runs: gaps 0/0/0 s, replica-seconds -1% to
    # -3%, first scale-up at 70-73 req/s offered. docs/autoscaling.md, "Sim-to-real".
    assert result.cost_error <= 0.15, result.report()
    assert abs(result.real_peak - result.sim_peak) <= 1, result.report()
    assert result.worst_scale_up_gap() <= period + STAMP_JITTER_S, result.report()

    # The autoscaler's writes are its own field manager's: never drift to correct.
    assert "edited outside the operator" not in operator.text()

    # Deleted while the operator runs, the object goes: kopf stops the timer and releases
    # its finalizer.
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def deleted() -> bool:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(deleted, timeout=60, what="the autoscaled object to be deleted")
