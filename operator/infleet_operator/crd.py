"""Render the InferenceDeployment CRD from the pydantic models.

Pydantic emits JSON Schema 2020-12; the API server wants a *structural*
OpenAPI v3 schema. The differences handled here:

- every ``$ref`` is inlined (no ``$defs``);
- ``additionalProperties: false`` is dropped (structural schemas prune unknown
  fields; strict field validation turns them into errors), and
  ``additionalProperties: true`` becomes ``x-kubernetes-preserve-unknown-fields``;
- ``Optional[X]`` (``anyOf: [X, null]``) becomes ``X``: absent, never null;
- ``exclusiveMinimum: n`` becomes ``minimum: n, exclusiveMinimum: true``;
- ``const`` becomes a one-value ``enum``; ``title`` is dropped;
- in ``spec``, object and array fields built by a default factory get
  ``default: {}`` / ``[]`` so the API server fills their nested defaults and CEL
  rules can rely on them existing.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from infleet_operator import api

Schema = dict[str, Any]

_DROP = {"title", "$defs", "discriminator"}
_OPTIONAL = "x-infleet-optional"  # internal marker, stripped before output


def _inline(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        # The field's own description beats the class docstring.
        target.update(siblings)
        return _inline(target, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _drop_null_branch(node: Schema) -> Schema:
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if not branches:
            continue
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1 and len(kept) < len(branches):
            merged = {k: v for k, v in node.items() if k != key}
            base = dict(kept[0])
            base.update(merged)  # field-level description/default win
            if base.get("default", "") is None:
                del base["default"]
            base[_OPTIONAL] = True  # absent means "unset": never default it
            return base
    return node


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _drop_null_branch(node)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties":
            if value is False:
                continue
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
            continue
        if key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
            continue
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
            continue
        out[key] = _structural(value)
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("type", "object")
        out.pop("additionalProperties", None)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _default_containers(node: Schema) -> Schema:
    """Give non-required object/array properties an empty default (see module doc)."""
    props = node.get("properties")
    if not props:
        return node
    required = set(node.get("required", []))
    for name, sub in props.items():
        _default_containers(sub)
        if name in required or "default" in sub or sub.get(_OPTIONAL):
            continue
        if sub.get("x-kubernetes-preserve-unknown-fields") and "properties" not in sub:
            continue  # opaque pass-through objects stay absent unless given
        if sub.get("type") == "object" and "properties" in sub:
            sub["default"] = {}
        elif sub.get("type") == "array":
            sub["default"] = []
        elif sub.get("type") == "object" and "additionalProperties" in sub:
            sub["default"] = {}
    if "items" in node and isinstance(node["items"], dict):
        _default_containers(node["items"])
    return node


def _strip_markers(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(_OPTIONAL, None)
        for value in node.values():
            _strip_markers(value)
    elif isinstance(node, list):
        for item in node:
            _strip_markers(item)


def structural_schema(model: type[api.Spec], *, defaults: bool) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_inline(raw, defs))
    if defaults:
        _default_containers(schema)
    _strip_markers(schema)
    return schema


def _status_schema() -> Schema:
    schema = structural_schema(api.InferenceDeploymentStatus, defaults=False)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["required"] = ["type", "status"]
    return schema


PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Available", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Policy", "type": "string", "jsonPath": ".status.autoscaler.policy", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.autoscaler.reason", "priority": 1},
    # A generative fleet's capacity per replica (-o wide; empty for single-pass fleets).
    {
        "name": "KV-Tokens",
        "type": "integer",
        "jsonPath": ".status.generation.kvCapacityTokens",
        "priority": 1,
    },
    {
        "name": "Context",
        "type": "integer",
        "jsonPath": ".status.generation.contextLength",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def render_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for InferenceDeployment."""
    spec_schema = structural_schema(api.InferenceDeploymentSpec, defaults=True)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "infleet"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["infleet"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served by a fleet of GPU workers over the "
                            "KServe v2 / Triton protocol.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


HEADER = (
    "# Generated by `infleet crd` from operator/infleet_operator/api.py. Do not edit by hand:\n"
    "# change the pydantic models and run `make crds`.\n"
)


def render_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(render_crd(), sort_keys=False, width=100)


CRD_FILENAME = "infleet.dev_inferencedeployments.yaml"
