"""The Policy protocol and the name -> policy registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from infleet_operator.autoscaling.observations import Bounds, Decision, Observation


class Policy(Protocol):
    """Observations in, a bounded decision out. Call ``decide`` once per tick, in time order."""

    name: str
    bounds: Bounds

    def decide(self, obs: Observation) -> Decision: ...


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


def _registry() -> dict[str, Callable[[Mapping[str, Any]], Policy]]:
    from infleet_operator.autoscaling.hpa import HpaPolicy
    from infleet_operator.autoscaling.kpa import KpaPolicy
    from infleet_operator.autoscaling.oracle import OraclePolicy
    from infleet_operator.autoscaling.predictive import PredictivePolicy

    return {
        "hpa": HpaPolicy.from_params,
        "kpa": KpaPolicy.from_params,
        "predictive": PredictivePolicy.from_params,
        "oracle": OraclePolicy.from_params,
    }


POLICY_NAMES = ("hpa", "kpa", "predictive", "oracle")


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build a policy by name.

    ``params`` holds ``min_replicas``, ``max_replicas``, ``target`` (the policy's
    main knob: queue depth per replica for hpa, concurrency per replica for kpa,
    utilisation for predictive/oracle) and any field of that policy's config.
    """
    factories = _registry()
    if name not in factories:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    return factories[name](params or {})
