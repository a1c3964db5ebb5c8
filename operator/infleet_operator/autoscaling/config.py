"""Policy parameters: a params dict -> a policy's config dataclass and its bounds.

Every policy module imports this (never the registry), so the registry can
import every policy without a cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from infleet_operator.autoscaling.observations import Bounds

C = TypeVar("C")


def build_config(cls: type[C], params: Mapping[str, Any], target_field: str) -> C:
    """Dataclass config from a params dict; ``target`` aliases the policy's own target knob.

    Unknown keys raise, so a typo in a CR or a CLI flag does not pass silently.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {
        k: v for k, v in params.items() if k not in ("target", "min_replicas", "max_replicas")
    }
    if params.get("target") is not None:
        values[target_field] = params["target"]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)}")
    return cls(**values)


def bounds_from(params: Mapping[str, Any]) -> Bounds:
    return Bounds(int(params.get("min_replicas", 1)), int(params.get("max_replicas", 100)))
