"""The Policy protocol: what the operator's timer and the simulator call each tick."""

from __future__ import annotations

from typing import Protocol

from infleet_operator.autoscaling.observations import Bounds, Decision, Observation


class Policy(Protocol):
    """Observations in, a bounded decision out. Call ``decide`` once per tick, in time order."""

    name: str
    bounds: Bounds

    def decide(self, obs: Observation) -> Decision: ...
