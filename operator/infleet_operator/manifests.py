"""Read InferenceDeployment manifests from YAML files and check them against the models."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infleet_operator import api, crd
from infleet_worker.config import FieldError


@dataclass(frozen=True)
class ManifestProblem:
    path: str
    name: str
    errors: list[str]


def iter_documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            yield doc


def is_inference_deployment(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == api.KIND and str(doc.get("apiVersion", "")).startswith(api.GROUP)


def format_errors(exc: ValidationError, root: str = "") -> list[str]:
    """One line per error, ``path: message``, in the API server's words where they differ:
    the path as it writes it (``spec.engine.batchBuckets``, ``spec.tolerations[0].effect``,
    ``spec.resources.limits[cpu]``) and its phrases (``Required value``,
    ``Unsupported value: ...``, ``field not declared in schema``), so ``infleet validate``
    and ``kubectl apply`` point at the same field with the same words."""
    lines = []
    for err in exc.errors():
        loc = [*([root] if root else []), *err["loc"]]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):  # a cross-field rule names its field
            loc.extend(cause.field.split("."))
        # Our own rules (value errors) are CEL rules on the server, which writes map keys
        # in brackets; its OpenAPI schema checks write them dotted.
        path, node = locate(loc, keys_in_brackets=err["type"] == "value_error")
        lines.append(f"{path}: {_message(err, node)}")
    return lines


def _message(err: Any, node: dict[str, Any] | None) -> str:
    kind = err["type"]
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return "field not declared in schema"
    if kind in ("enum", "literal_error") and node and "enum" in node:
        allowed = ", ".join(json.dumps(v) for v in node["enum"])
        return f"Unsupported value: {json.dumps(err['input'])}: supported values: {allowed}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if msg.startswith(("Input should be ", "String should ")):  # bounds, patterns, types
        msg = msg.split(" ", 1)[1].replace("should match pattern", "should match")
        return f"Invalid value: {json.dumps(err['input'], default=str)}: {msg}"
    return msg


def locate(
    loc: Sequence[str | int], keys_in_brackets: bool = False
) -> tuple[str, dict[str, Any] | None]:
    """A pydantic location as a Kubernetes field path, with the CRD schema node there."""
    node: dict[str, Any] | None = _object_schema()
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = (node or {}).get("items")
            continue
        props = (node or {}).get("properties")
        if props is not None and part in props:
            node = props[part]
        elif node is not None and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]  # a map key (resources.limits, labels, ...)
            if keys_in_brackets:
                out += f"[{part}]"
                continue
        else:
            node = None
        out += f".{part}" if out else str(part)
    return out or "<root>", node


@functools.cache
def _object_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema (the same render the API server validates against)."""
    version = crd.render_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def parse_spec(spec: dict[str, Any]) -> api.InferenceDeploymentSpec:
    return api.InferenceDeploymentSpec.model_validate(spec)


def validate_file(path: Path) -> tuple[list[api.InferenceDeployment], list[ManifestProblem]]:
    good: list[api.InferenceDeployment] = []
    bad: list[ManifestProblem] = []
    for doc in iter_documents(path):
        if not is_inference_deployment(doc):
            continue
        name = str(doc.get("metadata", {}).get("name", "<unnamed>"))
        try:
            good.append(api.InferenceDeployment.model_validate(doc))
        except ValidationError as exc:
            bad.append(ManifestProblem(str(path), name, format_errors(exc)))
    return good, bad
