"""The InferenceDeployment models: examples parse, invalid specs fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from infleet_operator import api, cli, manifests
from spec_cases import BASE_SPEC, INVALID_CASES, VALID_CASES, SpecCase

ROOT = Path(__file__).resolve().parents[1]


def test_base_spec_is_valid() -> None:
    spec = manifests.parse_spec(BASE_SPEC)
    assert spec.gpus_per_pod == 0  # device cpu
    assert spec.batching.max_batch_size == 16


def test_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 30
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES)


def model_errors(case: SpecCase) -> list[str]:
    try:
        api.InferenceDeployment.model_validate(case.document())
    except ValidationError as exc:
        return manifests.format_errors(exc)
    return []


def validate_cli(
    case: SpecCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    """``infleet validate`` on the case's manifest: exit code and its error lines."""
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(yaml.safe_dump(case.document()))
    code = cli.main(["validate", str(path)])
    err = capsys.readouterr().err
    return code, [line.strip() for line in err.splitlines() if line.startswith(" ")]


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_spec_one_error_naming_field_and_rule(case: SpecCase) -> None:
    errors = model_errors(case)
    assert len(errors) == 1, errors
    path, _, message = errors[0].partition(": ")
    assert path == case.path, errors
    assert case.message in message, errors


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_infleet_validate_prints_the_same(
    case: SpecCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = validate_cli(case, tmp_path, capsys)
    assert code == 1
    assert lines == model_errors(case)


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda c: c.id)
def test_valid_specs_accepted(
    case: SpecCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert model_errors(case) == []
    assert validate_cli(case, tmp_path, capsys) == (0, [])


def test_integer_gpu_quantity_reaches_the_pod_as_a_quantity() -> None:
    spec = manifests.parse_spec(
        {**BASE_SPEC, "engine": {"device": "cuda"}, "resources": {"limits": {"nvidia.com/gpu": 1}}}
    )
    assert spec.resources.limits == {"nvidia.com/gpu": "1"}


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
