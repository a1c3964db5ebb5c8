"""A generative fleet's pods: probes that outlast a long prefill, a grace period sized
from generation.maxTokens, and the generation sections in the worker's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infleet_operator import children, generation, manifests

ROOT = Path(__file__).resolve().parents[1]


def render(path: str, **spec_patch: Any) -> children.Children:
    doc = yaml.safe_load((ROOT / path).read_text())
    doc["spec"].update(spec_patch)
    doc["metadata"] = {"name": "llama", "namespace": "ml", "uid": "uid-1", "generation": 1}
    return children.render(doc)


def pod(c: children.Children) -> dict[str, Any]:
    return dict(c.deployment["spec"]["template"]["spec"])


def test_generate_example_gets_lenient_probes_and_a_grace_period_for_its_answers() -> None:
    c = render("manifests/examples/llama-generate.yaml")
    p = pod(c)
    # maxTokens 256 x 0.05 s + preStop 3 + drain 5 + margin 5 = 25.8 -> the spec's 60 wins
    assert p["terminationGracePeriodSeconds"] == 60
    long = render(
        "manifests/examples/llama-generate.yaml",
        engine={"device": "cpu", "generation": {"maxTokens": 2000, "secondsPerToken": 0.1}},
    )
    assert pod(long)["terminationGracePeriodSeconds"] == 3 + 5 + 200 + 5
    worker = pod(c)["containers"][0]
    assert worker["livenessProbe"]["timeoutSeconds"] == 5
    live = worker["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    assert worker["readinessProbe"]["timeoutSeconds"] == 5
    assert worker["startupProbe"]["failureThreshold"] == 300  # model load: unchanged


def test_single_pass_fleet_keeps_its_probes_and_grace() -> None:
    c = render("manifests/examples/cpu-minimal.yaml")
    assert pod(c)["terminationGracePeriodSeconds"] == 60
    assert "timeoutSeconds" not in pod(c)["containers"][0]["livenessProbe"]


def test_the_worker_config_carries_the_generation_sections() -> None:
    c = render("manifests/examples/llama-generate.yaml")
    cfg = json.loads(c.config_map["data"]["worker.json"])
    assert cfg["model"]["task"] == "generate"
    assert cfg["engine"]["speculative"] == {
        "adaptive": True,
        "numTokens": 4,
        "parameters": {},
        "targetLayers": 1,
    }
    assert cfg["engine"]["generation"]["maxTokens"] == 256
    assert cfg["engine"]["kvCache"]["memoryFraction"] == 0.5


def test_generates_is_told_by_task_source_or_sections() -> None:
    def spec(**patch: Any) -> Any:
        base: dict[str, Any] = {"model": {"name": "m", "source": "file:///models/m"}}
        base.update(patch)
        return manifests.parse_spec(base)

    assert not generation.generates(spec())  # a file:// source alone could be either
    assert generation.generates(
        spec(model={"name": "m", "source": "file:///m", "task": "generate"})
    )
    assert generation.generates(spec(engine={"generation": {"maxTokens": 8}}))
    assert generation.generates(spec(model={"name": "m", "source": "builtin://llama"}))
    assert not generation.generates(
        spec(model={"name": "m", "source": "builtin://llama", "task": "embed"})
    )
