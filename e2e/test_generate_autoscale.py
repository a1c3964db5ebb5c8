"""The autoscaler sizes a generative fleet on its token signal, on the real control plane.

A llama fleet (the tiny CPU shape of fleet/generate.py) with autoscaling on: hpa
on waiting + running sequences per ready replica (autoscaling/tokens.py,
docs/autoscaling.md "Generative fleets") against a target of one sequence, between
1 and 2 replicas. Three concurrent streams (fleet/streams.py, the real ``openai``
client) are three sequences on one replica: the autoscaler asks for 2 by itself and
the second pod serves streams; when the load stops, the fleet has no sequence and
the autoscaler goes back to 1 by itself. No spec.replicas patch, no fixed sleep: the
test waits on what it can observe (the autoscaler's status, the Deployment, the
EndpointSlice, the streams). No stream is cut: every stream started completes with
its finish_reason and all its tokens.

hpa, not kpa or predictive, because its decision is plain and quick here: one
sequence per replica is the target, a decision every second, a 5 s scale-down
window (kpa's stable window is Knative's fixed 60 s; predictive would need a
learned tokens/s capacity first).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from fleet.generate import create_fleet, get, pods, settled
from fleet.namespaces import scratch_namespace
from fleet.operator import OperatorProcess
from fleet.streams import StreamLoad
from kube_harness.testing import wait_for

pytestmark = pytest.mark.cluster

STREAMS, TOKENS = 3, 32  # three sequences: three times the target on one replica
AUTOSCALING: dict[str, Any] = {
    "enabled": True,
    "policy": "hpa",
    "minReplicas": 1,
    "maxReplicas": 2,
    "targetQueueDepthPerReplica": 1,  # sequences (waiting + running) per ready replica
    "intervalSeconds": 1,
    "scaleDownStabilizationSeconds": 5,
}


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with scratch_namespace(api, "e2e-genscale") as name:
        yield name


def autoscaler(api: Any, ns: str, name: str) -> dict[str, Any]:
    return dict((get(api, ns, name).get("status") or {}).get("autoscaler") or {})


def asked(api: Any, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    """status.autoscaler once the autoscaler has asked for ``replicas`` (and the
    Deployment carries it), else None."""
    auto = autoscaler(api, ns, name)
    dep = client.AppsV1Api(api).read_namespaced_deployment(name, ns)
    return auto if auto.get("desiredReplicas") == replicas == dep.spec.replicas else None


def one_pod(api: Any, ns: str, name: str) -> str | None:
    """The fleet's only pod, once the other has gone (not just terminating)."""
    found = pods(api, ns, name)
    ok = len(found) == 1 and not found[0].metadata.deletion_timestamp
    return str(found[0].metadata.name) if ok else None


def sequences_per_second(streams: StreamLoad, since: float, until: float) -> float:
    """Streams (one sequence each) that completed in [since, until), per second."""
    done = [r for r in streams.snapshot() if r.ok and since <= (r.ended or 0) < until]
    return len(done) / (until - since)


def scaled_events(api: Any, ns: str, name: str) -> list[str]:
    evs = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name}"
    )
    return [e.message for e in evs.items if e.reason == "Scaled"]


def test_autoscaler_scales_a_generative_fleet_on_tokens_and_cuts_no_stream(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    name = create_fleet(api, ns, AUTOSCALING)
    (first,) = pods(api, ns, name)
    streams = StreamLoad(api, ns, name, streams=STREAMS, max_tokens=TOKENS).start()
    t_load = time.monotonic()
    try:
        up = wait_for(
            lambda: asked(api, ns, name, 2), timeout=60, interval=0.2, what="the autoscaler at 2"
        )
        t_up = time.monotonic()
        first_ip = first.status.pod_ip
        second = wait_for(
            lambda: next((a for a in streams.watcher.addresses if a != first_ip), None),
            timeout=90,
            what="a second Ready pod in the EndpointSlice",
        )
        wait_for(lambda: streams.completed_on(second) >= 2, timeout=60, what="streams on pod 2")
        t_served = time.monotonic()
        wait_for(lambda: settled(api, ns, name, 2), timeout=30, what="status: 2 ready")
        # Under load at 2: the autoscaler holds there (3 sequences > 1 per replica x 2).
        mark = time.monotonic()
        wait_for(
            lambda: (
                streams.completed_on(first_ip, after=mark) >= 2
                and streams.completed_on(second, after=mark) >= 2
            ),
            timeout=60,
            what="streams on both pods at 2",
        )
        held = autoscaler(api, ns, name)
        at_two = {p.metadata.name for p in pods(api, ns, name)}
        seq_rate = sequences_per_second(streams, t_load, time.monotonic())
    finally:
        streams.stop()
    t_stop = time.monotonic()
    down = wait_for(
        lambda: asked(api, ns, name, 1), timeout=60, interval=0.2, what="the autoscaler at 1"
    )
    t_down = time.monotonic()
    # The ReplicaSet picks the pod to delete (either one: both idle, both Ready a while).
    staying = wait_for(lambda: one_pod(api, ns, name), timeout=90, what="one pod left")
    left = at_two - {staying}
    t_gone = time.monotonic()
    wait_for(lambda: settled(api, ns, name, 1), timeout=30, what="status: 1 ready")

    counts = streams.counts()
    print(
        f"\nload: {STREAMS} streams of {TOKENS} tokens: {counts['started']} started, "
        f"{counts['completed']} completed, {counts['failed']} failed, {counts['open']} open; "
        f"finish reasons {sorted(map(str, streams.finish_reasons()))}"
    )
    print(
        f"scale-up: the autoscaler asked for 2 {t_up - t_load:.1f}s after the load began, "
        f"the second pod served streams {t_served - t_up:.1f}s later"
    )
    print(f"  status.autoscaler then: {up}")
    print(
        f"  at 2 under load: desired {held.get('desiredReplicas')}, observed "
        f"{held.get('observedArrivalRate')} tokens/s (clients: {seq_rate:.1f} sequences/s, "
        f"{seq_rate * TOKENS:.0f} tokens/s), "
        f"reason: {held.get('reason')}"
    )
    print(
        f"scale-down: the autoscaler asked for 1 {t_down - t_stop:.1f}s after the load "
        f"stopped, {', '.join(sorted(left))} "
        f"({'the first' if first.metadata.name in left else 'the second'} pod) "
        f"gone {t_gone - t_down:.1f}s later"
    )
    print(f"  status.autoscaler then: {down}")
    print(f"test took {time.monotonic() - t0:.1f}s")

    assert streams.failures() == []
    assert counts["started"] == counts["completed"] and counts["open"] == 0
    assert streams.finish_reasons() == {"length"}  # every stream got its finish_reason
    assert up["policy"] == "hpa"
    # Decided on the token signal's sequences (3 on one replica, target 1), not on requests.
    # (2 or 3: a client between two streams is one sequence fewer for a moment.)
    why = up["history"][0]["reason"]  # the decision that scaled
    scaled_up = re.match(r"sequences \(waiting \+ running\) (\d+) over 1 ready", why)
    assert scaled_up and int(scaled_up[1]) >= 2, up
    assert held["desiredReplicas"] == 2
    # The signal is tokens, not requests: the rate the autoscaler observed is in generated
    # tokens/s, many times the sequences (requests) per second. Loose on purpose: the figure
    # is one decision's (1 s of counters, demand = new sequences/s x tokens per sequence)
    # left in status for up to 30 s, the clients' an average over the whole load.
    assert float(held["observedArrivalRate"]) > seq_rate * TOKENS / 4, (held, seq_rate)
    history = [(h["fromReplicas"], h["toReplicas"]) for h in down["history"]]
    assert history == [(1, 2), (2, 1)], down["history"]
    messages = scaled_events(api, ns, name)
    assert any(m.startswith("Scaled up from 1 to 2 (hpa)") for m in messages), messages
    assert any(m.startswith("Scaled down from 2 to 1 (hpa)") for m in messages), messages
    assert get(api, ns, name)["metadata"]["generation"] == 1  # the test never wrote replicas
    assert "edited outside the operator" not in operator.text()
