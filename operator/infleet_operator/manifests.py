"""Read InferenceDeployment manifests from YAML files and check them against the models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infleet_operator import api


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


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error, naming the field in the camelCase path users wrote."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return lines


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
