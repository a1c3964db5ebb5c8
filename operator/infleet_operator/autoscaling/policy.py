"""The Policy protocol: what the operator's timer and the simulator call each tick."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from infleet_operator.autoscaling.observations import Bounds, Decision, Observation


class Policy(Protocol):
    """Observations in, a bounded decision out. Call ``decide`` once per tick, in time order."""

    name: str
    bounds: Bounds

    def decide(self, obs: Observation) -> Decision: ...


@runtime_checkable
class Leads(Protocol):
    """A policy that plans one pod start ahead, and can move that lead in place (the
    measured pod start changes as pods become Ready) without losing what it learnt."""

    def set_lead(self, lead_s: float) -> None: ...
