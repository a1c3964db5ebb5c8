"""The checked-in CRD is a fresh render of the models, and it is a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infleet_operator import crd

ROOT = Path(__file__).resolve().parents[1]


def _walk(node: Any, path: str = ""):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


def test_checked_in_crd_matches_render() -> None:
    checked_in = (ROOT / "crds" / crd.CRD_FILENAME).read_text()
    assert checked_in == crd.render_crd_yaml(), "crds/ is stale: run `make crds`"


def test_schema_is_structural() -> None:
    schema = crd.render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        assert "title" not in node, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
            assert node.get("type") == "object", path
        if node.get("additionalProperties") is False:
            raise AssertionError(f"additionalProperties: false at {path}")
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


def test_optional_fields_have_no_default() -> None:
    spec = crd.render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    model = spec["properties"]["model"]["properties"]
    assert "default" not in model["inputs"]  # absent = use the model's own signature
    assert spec["properties"]["engine"]["default"] == {}


def test_subresources_and_columns() -> None:
    version = crd.render_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert version["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Ready", "Replicas", "Desired", "Model", "Age"):
        assert wanted in names


def test_cel_rules_present() -> None:
    rules = [
        rule["rule"]
        for _, node in _walk(crd.render_crd())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    text = "\n".join(rules)
    assert "self.minReplicas <= self.maxReplicas" in text
    assert "self.engine.microBatches <= self.batching.maxBatchSize" in text
    assert "self.batchBuckets.isSorted()" in text  # [8, 4, 2] refused by the API server
    assert "'nvidia.com/gpu' in self.resources.limits" in text


def test_quantities_are_int_or_string() -> None:
    spec = crd.render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    limits = spec["properties"]["resources"]["properties"]["limits"]["additionalProperties"]
    assert limits["x-kubernetes-int-or-string"] is True and "type" not in limits
    # The scale subresource refuses negative replicas itself; a minimum would say it twice.
    assert "minimum" not in spec["properties"]["replicas"]
