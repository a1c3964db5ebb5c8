"""A fleet manifest for the simulator: load it, apply ``--set`` variants, validate.

Paths are the manifest's own camelCase field names under ``spec``
(``autoscaling.targetQueueDepthPerReplica``); values are YAML scalars.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infleet_operator import api, manifests


@dataclass(frozen=True)
class Fleet:
    name: str
    raw_spec: dict[str, Any]  # as written (camelCase), before validation
    spec: api.InferenceDeploymentSpec

    @property
    def gpus_per_pod(self) -> int:
        return self.spec.gpus_per_pod


def parse_assignment(text: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> (path, YAML-parsed value)."""
    path, sep, value = text.partition("=")
    path = path.strip().removeprefix("spec.")
    if not sep or not path:
        raise ValueError(f"{text!r}: expected FIELD=VALUE, e.g. autoscaling.minReplicas=2")
    return path, yaml.safe_load(value)


def with_value(raw_spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the spec with the field at ``path`` set (intermediate objects created)."""
    out = copy.deepcopy(raw_spec)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"spec.{path}: spec.{part} is not an object")
        node = child
    node[parts[-1]] = value
    return out


def validated(name: str, raw_spec: dict[str, Any]) -> Fleet:
    try:
        spec = manifests.parse_spec(raw_spec)
    except ValidationError as exc:
        lines = "; ".join(
            f"spec.{line}".replace("spec.<root>: ", "spec: ")
            for line in manifests.format_errors(exc)
        )
        raise ValueError(f"{name}: {lines}") from None
    return Fleet(name, raw_spec, spec)


def load_fleet(path: str | Path, name: str | None = None) -> Fleet:
    """The InferenceDeployment in ``path`` (the one called ``name`` if the file has several)."""
    docs = [d for d in manifests.iter_documents(Path(path)) if manifests.is_inference_deployment(d)]
    if name is not None:
        docs = [d for d in docs if (d.get("metadata") or {}).get("name") == name]
    if not docs:
        what = f" named {name!r}" if name else ""
        raise ValueError(f"{path}: no InferenceDeployment{what}")
    if len(docs) > 1:
        names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in docs)
        raise ValueError(
            f"{path} holds several InferenceDeployments ({names}): pick one with --name"
        )
    doc = docs[0]
    return validated(str((doc.get("metadata") or {}).get("name", path)), doc.get("spec") or {})


def with_sets(fleet: Fleet, assignments: list[str]) -> Fleet:
    raw = fleet.raw_spec
    for text in assignments:
        raw = with_value(raw, *parse_assignment(text))
    return validated(fleet.name, raw)


def snippet(path: str, value: Any) -> str:
    """YAML to paste into the manifest: ``spec:`` down to the one field."""
    node: Any = value
    for part in reversed(path.split(".")):
        node = {part: node}
    return yaml.safe_dump({"spec": node}, sort_keys=False)
