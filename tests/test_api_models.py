"""The InferenceDeployment models: examples parse, invalid specs fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infleet_operator import api, manifests
from spec_cases import BASE_SPEC, INVALID_CASES, InvalidCase

ROOT = Path(__file__).resolve().parents[1]


def test_base_spec_is_valid() -> None:
    spec = manifests.parse_spec(BASE_SPEC)
    assert spec.gpus_per_pod == 0  # device cpu
    assert spec.batching.max_batch_size == 16


def test_at_least_fifteen_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 15


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_spec_rejected_naming_field(case: InvalidCase) -> None:
    with pytest.raises(ValidationError) as info:
        manifests.parse_spec(case.spec())
    text = "\n".join(manifests.format_errors(info.value))
    assert case.field in text, text


@pytest.mark.parametrize(
    "path", sorted((ROOT / "manifests/examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_examples_validate(path: Path) -> None:
    good, bad = manifests.validate_file(path)
    assert not bad, bad
    assert good


def test_example_shapes() -> None:
    by_name = {}
    for path in (ROOT / "manifests/examples").glob("*.yaml"):
        for obj in manifests.validate_file(path)[0]:
            by_name[obj.metadata["name"]] = obj.spec
    assert by_name["encoder-pp2"].gpus_per_pod == 2
    assert by_name["encoder"].gpus_per_pod == 1
    assert by_name["encoder"].autoscaling.enabled
    assert by_name["mlp-cpu"].gpus_per_pod == 0


def test_wire_round_trip_uses_camel_case() -> None:
    spec = manifests.parse_spec(BASE_SPEC)
    wire = spec.to_wire()
    assert "maxBatchSize" in wire["batching"]
    assert api.InferenceDeploymentSpec.model_validate(wire) == spec


def test_gpus_follow_pipeline_parallel() -> None:
    spec = manifests.parse_spec({**BASE_SPEC, "engine": {"device": "auto", "pipelineParallel": 4}})
    assert spec.gpus_per_pod == 4


def test_volume_mount_must_name_a_volume() -> None:
    with pytest.raises(ValidationError, match="volumeMounts"):
        manifests.parse_spec({**BASE_SPEC, "volumeMounts": [{"name": "models", "mountPath": "/m"}]})
