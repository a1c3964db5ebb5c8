"""A generative fleet on the real control plane: an InferenceDeployment of the tiny
builtin://llama (task generate, speculative decoding) becomes Ready, and the real
``openai`` client streams a chat completion through its pod (by pod IP from the
EndpointSlices: nothing routes ClusterIPs here); scaled to zero in the middle of a
long stream, the pod finishes it (the operator's grace period from maxTokens, the
worker's drain). Under a bounded load of concurrent streams (fleet/streams.py) the
fleet scales 1 -> 2 -> 1 and rolls to a new pod template without cutting a stream
(test_generate_load.py)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from openai import OpenAI

from fleet.endpoints import EndpointWatcher
from fleet.namespaces import scratch_namespace
from fleet.operator import GROUP, PLURAL, ROOT, VERSION, OperatorProcess
from kube_harness.testing import wait_for

pytestmark = pytest.mark.cluster

LABEL = "infleet.dev/deployment"


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    with scratch_namespace(api, "e2e-gen") as name:
        yield name


def ready(api: Any, ns: str, name: str) -> dict[str, Any] | None:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    st = obj.get("status") or {}
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    return dict(obj) if conds.get("Ready") == "True" and st.get("readyReplicas") else None


def test_llama_fleet_streams_a_chat_completion(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    doc = yaml.safe_load((ROOT / "manifests/examples/llama-generate.yaml").read_text())
    doc["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    doc["spec"]["engine"]["generation"]["maxTokens"] = 1000  # grace: 3+5+50+5 = 63 s
    name = doc["metadata"]["name"]
    t0 = time.monotonic()
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
    obj = wait_for(lambda: ready(api, ns, name), timeout=90, interval=0.5, what=f"{name} Ready")
    print(f"\ncreate -> Ready: {time.monotonic() - t0:.1f}s")
    print(f"status.generation: {obj['status'].get('generation')}")

    dep = client.AppsV1Api(api).read_namespaced_deployment(name, ns)
    pod = dep.spec.template.spec
    assert pod.termination_grace_period_seconds == 63  # from maxTokens x secondsPerToken
    worker = pod.containers[0]
    assert worker.liveness_probe.timeout_seconds == 5
    assert worker.liveness_probe.period_seconds * worker.liveness_probe.failure_threshold >= 60

    (ip,) = EndpointWatcher(api, ns, name).refresh()
    oai = OpenAI(base_url=f"http://{ip}:8000/v1", api_key="none", max_retries=0, timeout=30)
    assert [m.id for m in oai.models.list()] == ["llama"]
    stream = oai.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert finish == ["length"] and usage[-1].completion_tokens == 24
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # streamed
    print(f"streamed {len(chunks)} chunks, {len(text)} characters")

    metrics = urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=5).read().decode()
    verify = [
        line
        for line in metrics.splitlines()
        if line.startswith("infleet_generate_spec_verify_steps_total")
    ]
    assert verify and float(verify[0].rsplit(" ", 1)[1]) > 0  # the draft took part
    # status.generation: the pod's own figures, written with Ready (read before it)
    blocks = next(ln for ln in metrics.splitlines() if ln.startswith("infleet_generate_kv_blocks{"))
    kv_tokens = int(float(blocks.rsplit(" ", 1)[1])) * 16  # kvCache.blockSize
    assert obj["status"]["generation"] == {"kvCapacityTokens": kv_tokens, "contextLength": 1024}
    print(f"apply -> streamed: {time.monotonic() - t0:.1f}s")


def test_scale_down_lets_a_running_stream_finish(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    """spec.terminationGracePeriodSeconds 5 would cut a long answer; the operator raises
    it from generation.maxTokens, so a pod scaled away mid-stream finishes the stream
    (preStop, SIGTERM, the worker's drain, then its running sequence to the end)."""
    doc = yaml.safe_load((ROOT / "manifests/examples/llama-generate.yaml").read_text())
    spec = doc["spec"]
    spec["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    spec["model"]["parameters"] = {"layers": "12", "hidden": "768"}  # ~15 ms a token on CPU
    del spec["engine"]["speculative"]  # plain decoding: the draft would speed it up
    spec["engine"]["generation"]["maxTokens"] = 1000
    spec["terminationGracePeriodSeconds"] = 5
    name = doc["metadata"]["name"]
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
    wait_for(lambda: ready(api, ns, name), timeout=90, interval=0.5, what=f"{name} Ready")
    (ip,) = EndpointWatcher(api, ns, name).refresh()
    oai = OpenAI(base_url=f"http://{ip}:8000/v1", api_key="none", max_retries=0, timeout=90)
    stream = oai.completions.create(
        model="llama",
        prompt="Once",
        max_tokens=900,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = [next(stream)]
    co.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": {"replicas": 0}})
    t_scale = time.monotonic()
    chunks.extend(stream)
    lasted = time.monotonic() - t_scale
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    text = "".join(c.choices[0].text for c in chunks)
    print(f"\nstream outlived the scale-down by {lasted:.1f}s, {len(text)} characters")
    assert finish == ["length"]
    # preStop (3 s) and the drain window (5 s) passed: the worker had its SIGTERM and
    # kept generating (with the spec's 5 s grace it would have been killed by now).
    assert lasted > 9, "the answer was too quick to prove anything: use a slower model"

    def gone() -> bool:
        pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL}={name}")
        return not pods.items

    wait_for(gone, timeout=30, interval=0.5, what="the scaled-down pod gone")
