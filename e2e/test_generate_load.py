"""A generative fleet under a bounded load of concurrent streams on the real control
plane: the real ``openai`` client streams chat completions through the Service (its
EndpointSlices, fleet/streams.py) while the fleet scales 1 -> 2 -> 1 (spec.replicas)
and while it rolls to a new pod template. No stream is cut: every stream started
completes with its finish_reason and all its tokens, including a long one open on
the pod that goes away when that pod's worker gets SIGTERM (after the preStop sleep)
and still running when the drain window closes (the grace period the operator sized
from maxTokens lets it finish).

Deterministic by construction, not by timing luck: the test opens the long stream
itself on the pod that will go away, just before it scales down (that pod chosen
with ``controller.kubernetes.io/pod-deletion-cost``) or rolls (the only pod); 700
tokens of a 12-layer model (15-45 ms a token here) outlive the preStop (3 s) by
several seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from fleet.generate import (
    KV_BLOCKS,
    create_fleet,
    get,
    gone,
    only_address,
    patch_spec,
    pod_at,
    pods,
    settled,
    terminating,
)
from fleet.namespaces import scratch_namespace
from fleet.operator import OperatorProcess
from fleet.streams import StreamLoad
from infleet_operator.children import DRAIN_SECONDS, PRESTOP_SLEEP_SECONDS
from kube_harness.testing import wait_for

pytestmark = pytest.mark.cluster

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LONG_TOKENS = 700  # < maxTokens, and prompt + 700 < the 1,024-token context


def load(api: Any, ns: str, name: str) -> StreamLoad:
    """Three concurrent streams of 32 tokens, and the long ones the test opens."""
    return StreamLoad(api, ns, name, streams=3, max_tokens=32).start()


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with scratch_namespace(api, "e2e-genload") as name:
        yield name


def report(streams: StreamLoad, what: str, victim_ip: str, deleted: float) -> None:
    """Counts; every stream completed, including those open on the pod that went away
    at its deletion, at its SIGTERM (after preStop) and when its drain window closed."""
    counts = streams.counts()
    sigterm = deleted + PRESTOP_SLEEP_SECONDS  # ``deleted`` is when the test saw it: later
    at = {
        "deletion": streams.in_flight_on(victim_ip, deleted),
        "SIGTERM": streams.in_flight_on(victim_ip, sigterm),
        "drain end": streams.in_flight_on(victim_ip, sigterm + DRAIN_SECONDS),
    }
    finished = max(r.ended or 0.0 for r in at["deletion"]) - deleted if at["deletion"] else 0
    print(
        f"\n{what}: {counts['started']} streams started, {counts['completed']} completed, "
        f"{counts['failed']} failed; open on the pod going away at "
        + ", ".join(f"{k} {len(v)}" for k, v in at.items())
        + f"; its last finished {finished:.1f}s after the deletion; finish reasons "
        f"{sorted(map(str, streams.finish_reasons()))}"
    )
    assert streams.failures() == []
    assert counts["started"] == counts["completed"] and counts["open"] == 0
    assert streams.finish_reasons() == {"length"}  # every stream got its finish_reason
    assert at["SIGTERM"], "no stream was open on the pod at its SIGTERM: nothing proven"


def streaming_fleet(api: Any, ns: str) -> tuple[str, StreamLoad, str]:
    """A Ready one-pod fleet under the stream load, its pod serving it: (name, load, pod IP)."""
    name = create_fleet(api, ns)
    streams = load(api, ns, name)
    try:
        pod = only_address(streams)
        wait_for(lambda: streams.completed_on(pod) >= 3, timeout=60, what="streams on pod 1")
    except BaseException:
        streams.stop()
        raise
    return name, streams, pod


def test_scale_up_and_down_under_stream_load_cuts_no_stream(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    name, streams, first = streaming_fleet(api, ns)
    try:
        patch_spec(api, ns, name, {"replicas": 2})
        t_up = time.monotonic()
        second = wait_for(
            lambda: next((a for a in streams.watcher.addresses if a != first), None),
            timeout=90,
            what="a second Ready pod in the EndpointSlice",
        )
        wait_for(lambda: streams.completed_on(second) >= 2, timeout=60, what="streams on pod 2")
        print(f"\nscale-up: the second pod served streams {time.monotonic() - t_up:.1f}s after")
        wait_for(lambda: settled(api, ns, name, 2), timeout=30, what="status: 2 ready")

        # Scale down the pod with a long stream just opened.
        streams.open_long(second, LONG_TOKENS)
        chosen = pod_at(api, ns, name, second)
        client.CoreV1Api(api).patch_namespaced_pod(
            chosen, ns, {"metadata": {"annotations": {DELETION_COST: "-1000"}}}
        )
        patch_spec(api, ns, name, {"replicas": 1})
        t_down = time.monotonic()
        victim, victim_ip, seen = wait_for(
            lambda: terminating(api, ns, name), timeout=30, interval=0.1, what="a pod terminating"
        )
        assert victim == chosen
        wait_for(lambda: gone(api, ns, name, victim), timeout=90, what=f"{victim} gone")
        print(f"scale-down: {victim} drained and gone {time.monotonic() - t_down:.1f}s after")
        wait_for(lambda: settled(api, ns, name, 1), timeout=30, what="status: 1 ready")
        survivor = only_address(streams)
        mark = time.monotonic()
        wait_for(lambda: streams.completed_on(survivor, after=mark) >= 2, timeout=60, what="more")
    finally:
        streams.stop()
    gen = get(api, ns, name)["status"]["generation"]
    assert gen == {"kvCapacityTokens": KV_BLOCKS * 16, "contextLength": 1024}
    report(streams, "scale 1 -> 2 -> 1", victim_ip, seen)
    print(f"test took {time.monotonic() - t0:.1f}s")


def test_rolling_update_under_stream_load_loses_no_stream(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    name, streams, old = streaming_fleet(api, ns)
    try:
        streams.open_long(old, LONG_TOKENS)
        patch_spec(api, ns, name, {"env": [{"name": "INFLEET_E2E_ROLL", "value": "2"}]})
        t_roll = time.monotonic()
        victim, victim_ip, seen = wait_for(
            lambda: terminating(api, ns, name), timeout=90, interval=0.1, what="old pod leaving"
        )
        assert victim_ip == old
        print(f"\nroll: the old pod began terminating {seen - t_roll:.1f}s after the patch")
        new = wait_for(
            lambda: next((a for a in streams.watcher.addresses if a != old), None),
            timeout=30,
            what="the new pod in the EndpointSlice",
        )
        wait_for(lambda: gone(api, ns, name, victim), timeout=90, what=f"{victim} gone")
        wait_for(lambda: settled(api, ns, name, 1), timeout=30, what="status: rolled, Ready")
        print(f"roll: the old pod drained and gone {time.monotonic() - t_roll:.1f}s after")
        mark = time.monotonic()
        wait_for(lambda: streams.completed_on(new, after=mark) >= 2, timeout=60, what="more")
    finally:
        streams.stop()
    (pod,) = pods(api, ns, name)
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    assert env.get("INFLEET_E2E_ROLL") == "2"  # the surviving pod runs the new template
    report(streams, "rolling update", victim_ip, seen)
    print(f"test took {time.monotonic() - t0:.1f}s")
