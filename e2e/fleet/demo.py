"""`make demo`: a local fleet on an embedded control plane, real traffic, autoscaling visible.

Everything is real except the GPU: a control plane built from Go modules, the
operator as a process, worker pods run by the node agent in their own network
namespaces, and tritonclient traffic. The model is the labelled ``synthetic``
one, whose batches *sleep* for a configured time, so that on 2 CPU cores each
added replica adds capacity the way a GPU would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.demo_record import DemoRecorder, progress_line

ROOT = Path(__file__).resolve().parents[2]
NAME = "synthetic-demo"
NAMESPACE = "default"

# A worker serves at most maxBatchSize / (baseMs + perItemMs * maxBatchSize) req/s:
# 8 / (60 ms + 8 * 5 ms) = 80 req/s per replica. Kept low so that the 2-core machine
# (which also runs the control plane, the operator and the client) is not the limit.
PER_REPLICA_RPS = 80.0

DEMO_SPEC: dict[str, Any] = {
    "apiVersion": "infleet.dev/v1alpha1",
    "kind": "InferenceDeployment",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "model": {
            "name": "synthetic",
            "source": "builtin://synthetic",
            "parameters": {"baseMs": "60", "perItemMs": "5", "width": "16"},
        },
        "engine": {"device": "auto"},
        "batching": {
            "maxBatchSize": 8,
            "maxQueueDelayMicroseconds": 5000,
            "maxQueueSize": 2000,
        },
        "autoscaling": {
            "enabled": True,
            "policy": "predictive",
            "minReplicas": 1,
            "maxReplicas": 6,
            "targetQueueDepthPerReplica": 8,
            "intervalSeconds": 3,
            "scaleDownStabilizationSeconds": 20,
            "predictive": {"capacityPerReplica": PER_REPLICA_RPS},
        },
        "terminationGracePeriodSeconds": 30,
    },
}


@dataclass
class Phase:
    until: float
    label: str


# The traffic ramp: (time s, req/s) points, piecewise linear.
RAMP = [(0, 20), (20, 20), (100, 220), (140, 220), (170, 30), (180, 0), (330, 0)]
PHASES = [
    Phase(20, "warm: 20 req/s"),
    Phase(100, "ramp up to 220 req/s"),
    Phase(140, "peak"),
    Phase(180, "traffic falls away"),
    Phase(330, "idle: scale down to minReplicas"),
]


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _get_idep(custom: Any) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(
        "infleet.dev", "v1alpha1", NAMESPACE, "inferencedeployments", NAME
    )
    return obj


def _ready(obj: dict[str, Any]) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def _render(
    view: Any, t: float, phase: str, obj: dict[str, Any], stats: Any, events: list[str]
) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    st = obj.get("status") or {}
    auto = st.get("autoscaler") or {}
    sent, ok, p50, p99, failed_now = stats.window(5)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    table.add_row("time", f"{t:6.0f} s   {phase}")
    table.add_row("offered load", f"{sent:7.1f} req/s")
    table.add_row(
        "served", f"{ok:7.1f} req/s   (capacity ~{PER_REPLICA_RPS:.0f} req/s per replica)"
    )
    table.add_row("latency", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    table.add_row(
        "replicas",
        f"ready {st.get('readyReplicas', 0)} / running {st.get('replicas', 0)} / "
        f"desired {st.get('desiredReplicas', '?')}",
    )
    table.add_row("queue depth", f"{auto.get('queueDepth', float('nan')):7.1f}   (autoscaler view)")
    table.add_row(
        "forecast",
        f"{auto.get('forecast', float('nan')):7.1f} req/s at +{auto.get('leadSeconds', 0):.0f} s"
        f"   (observed {auto.get('observedArrivalRate', float('nan')):.1f})",
    )
    table.add_row("decision", str(auto.get("reason", "-"))[:110])
    kinds = ", ".join(f"{k}: {n}" for k, n in stats.error_kinds().items()) or "none"
    table.add_row(
        "failed requests",
        f"{stats.total_failed} of {stats.total_ok + stats.total_failed} "
        f"({failed_now} in the last 5 s; {kinds})"[:150],
    )
    bars = "\n".join(events[-6:]) or "(no scaling yet)"
    return Group(
        Panel(table, title=f"infleet demo: {NAME} (synthetic model: sleeps to emulate a GPU)"),
        Panel(bars, title="scale events"),
    )


PROGRESS_EVERY_S = 5.0  # a log line this often when stdout is not a terminal


async def _drive(cluster: Any, custom: Any, args: argparse.Namespace) -> tuple[Any, DemoRecorder]:
    from kubernetes import client as k8s
    from rich.console import Console
    from rich.live import Live

    from fleet.endpoints import EndpointWatcher
    from fleet.traffic import FleetTraffic, ramp_schedule

    api_client = cluster.api_client()
    idep = _get_idep(custom)
    headless = ((idep.get("status") or {}).get("endpoint") or {}).get("grpcHeadless", "")
    # e.g. "dns:///synthetic-demo-headless.default.svc.cluster.local:8001"
    service = headless.rsplit("/", 1)[-1].split(".", 1)[0] if headless else f"{NAME}-headless"
    watcher = EndpointWatcher(api_client, NAMESPACE, service).start()
    traffic = FleetTraffic(lambda: watcher.addresses, "synthetic", port=8000)
    duration = RAMP[-1][0] * args.speed
    ramp = ramp_schedule([(t * args.speed, r) for t, r in RAMP])
    core = k8s.CoreV1Api(api_client)
    seen_events: list[str] = []
    console = Console()
    recorder = DemoRecorder()
    run = asyncio.create_task(traffic.run(ramp, duration))
    start = time.monotonic()
    next_line = 0.0
    if not console.is_terminal:
        say(f"stdout is not a terminal: a progress line every {PROGRESS_EVERY_S:.0f} s")
    live = Live(console=console, refresh_per_second=2, transient=False)
    try:
        with live if console.is_terminal else contextlib.nullcontext(live):
            while not run.done():
                t = time.monotonic() - start
                phase = next((p.label for p in PHASES if t < p.until * args.speed), "done")
                obj = await asyncio.to_thread(_get_idep, custom)
                sample = recorder.add(time.monotonic() - traffic.stats.t0, obj)
                evs = await asyncio.to_thread(
                    core.list_namespaced_event,
                    NAMESPACE,
                    field_selector=f"involvedObject.name={NAME},reason=Scaled",
                )
                events = [
                    f"{(e.last_timestamp or e.event_time or e.first_timestamp)}  {e.message}"
                    for e in sorted(
                        evs.items, key=lambda e: str(e.last_timestamp or e.event_time or "")
                    )
                ]
                if console.is_terminal:
                    live.update(_render(live, t, phase, obj, traffic.stats, events))
                else:
                    for line in events[len(seen_events) :]:
                        say(f"event: {line}")
                    if t >= next_line:
                        next_line += PROGRESS_EVERY_S
                        window = traffic.stats.window(5)
                        say(progress_line(t, phase, window, sample, traffic.stats.total_failed))
                seen_events = events
                await asyncio.sleep(1.0)
            await run
    finally:
        watcher.stop()
        await traffic.close()
    return traffic.stats, recorder


def _write_plot(stats: Any, recorder: DemoRecorder, path: Path) -> None:
    """The same picture as `infleet simulate --plot`, of the live run."""
    try:
        from infleet_operator.simulator.plot import plot_timelines

        slo_ms = 500.0
        plot_timelines([recorder.timeline(stats)], slo_ms, str(path), f"{NAME}: live run")
    except ImportError as exc:  # matplotlib is a dev extra
        say(f"no plot ({exc}); pip install matplotlib")
        return
    say(f"plot of the run (offered vs served, replicas ready/desired, forecast, p99): {path}")


def _write_rehearsal(stats: Any, run_dir: Path, manifest: Path, seconds: float) -> None:
    """The offered load as a trace, and the command that replays it through the simulator."""
    trace = run_dir / "demo-traffic.csv"
    last = max(int(seconds), max(stats.seconds, default=-1) + 1)
    counts = [stats.seconds[s].sent if s in stats.seconds else 0 for s in range(last)]
    trace.write_text("count\n" + "\n".join(map(str, counts)) + "\n")
    say(
        f"replay it: infleet simulate -f {manifest} --trace {trace} "
        f"--plot {run_dir / 'demo-simulated.png'}  (add --profile from `infleet profile`)"
    )


def run(args: argparse.Namespace) -> int:
    from kubernetes import client as k8s

    from fleet.operator import OperatorProcess, install_operator_prereqs
    from kube_harness.build import find_binaries
    from kube_harness.cluster import Cluster
    from kube_harness.testing import wait_for

    run_dir = Path(tempfile.mkdtemp(prefix="infleet-demo-"))
    say(f"run directory (component and worker logs): {run_dir}")
    say("starting the control plane (etcd, kube-apiserver, controller-manager, scheduler)")
    say("and a node agent with 2 nodes x 4 GPUs (advertised; the synthetic model needs none)")
    cluster = Cluster(
        run_dir=run_dir / "cluster", nodes=2, gpus_per_node=4, binaries=find_binaries()
    )
    operator: OperatorProcess | None = None
    try:
        cluster.start()
        say(f"control plane up in {cluster.start_seconds:.1f}s at {cluster.server}")
        # CRDs and the operator's own RBAC; it runs with that ServiceAccount's token.
        kubeconfig = install_operator_prereqs(cluster, run_dir)
        operator = OperatorProcess(kubeconfig, run_dir, name="infleet-operator-demo").start()
        operator.wait_log("Resuming operations", timeout=60)
        say(f"operator started with its minimal RBAC (log: {operator.log})")
        manifest = run_dir / "demo-fleet.yaml"
        manifest.write_text(yaml.safe_dump(DEMO_SPEC, sort_keys=False))
        print(manifest.read_text())
        cluster.run_kubectl("apply", "--server-side", "-f", str(manifest))
        custom = k8s.CustomObjectsApi(cluster.api_client())
        t0 = time.monotonic()
        wait_for(lambda: _ready(_get_idep(custom)), 180, what="the fleet to become Ready")
        say(
            f"fleet Ready in {time.monotonic() - t0:.1f}s; starting traffic "
            f"({RAMP[-1][0] * args.speed:.0f} s)"
        )
        stats, recorder = asyncio.run(_drive(cluster, custom, args))
        ok, failed, failures = stats.total_ok, stats.total_failed, stats.failures
        _write_plot(stats, recorder, run_dir / "demo-timeline.png")
        _write_rehearsal(stats, run_dir, manifest, RAMP[-1][0] * args.speed)
        print(cluster.run_kubectl("get", "inferencedeployments", "-o", "wide"))
        print(
            cluster.run_kubectl(
                "get",
                "events",
                "--field-selector",
                f"involvedObject.name={NAME}",
                "--sort-by=.lastTimestamp",
            )
        )
        say(f"served {ok} requests, {failed} failed")
        for line in failures[:5]:
            say(f"  failure: {line}")
        return 0 if failed == 0 else 1
    finally:
        say("tearing down")
        if operator:
            operator.stop()
        cluster.stop()
        say("done: no processes, namespaces or ports left behind")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--speed",
        type=float,
        default=float(os.environ.get("DEMO_SPEED", "1.0")),
        help="stretch (>1) or shrink (<1) the traffic ramp",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
