"""What a policy sees each tick and what it answers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Observation:
    """Fleet metrics at one autoscaler tick.

    Totals are summed over the worker pods that reported. A field left as
    None counts as missing; so does ``missing=True`` (scrape failed, stale).
    """

    time: float  # seconds on any monotonic clock the caller keeps consistent
    current_replicas: int  # replicas currently asked for (Deployment spec)
    ready_replicas: int
    queue_depth: float | None = None  # requests waiting, not yet in a batch
    in_flight: float | None = None  # requests inside a running batch
    arrival_rate: float | None = None  # requests/s over the last scrape interval
    completion_rate: float | None = None  # requests/s finished over the same interval
    p99_latency_s: float | None = None
    missing: bool = False
    # Generative fleets (autoscaling/tokens.py): rates are in generated tokens/s, queue and
    # in-flight in sequences. One waiting sequence holds ``work_per_request`` units of the
    # rate (generated tokens per sequence; 1 for single-pass models), and ``memory_load`` is
    # how many replicas the KV cache in use fills at the target usage (None: not generative).
    work_per_request: float = 1.0
    memory_load: float | None = None

    @property
    def has_data(self) -> bool:
        """True when the load fields the policies read are all present and finite."""
        if self.missing:
            return False
        fields = (self.queue_depth, self.in_flight, self.arrival_rate)
        return all(v is not None and math.isfinite(v) for v in fields)

    @property
    def concurrency(self) -> float:
        """Queued plus in-flight requests (0 when missing)."""
        return (self.queue_depth or 0.0) + (self.in_flight or 0.0)

    def demand(self, value: float, per_replica_target: float) -> float:
        """``value`` (requests against a per-replica target), or, when the KV cache is the
        tighter limit of a generative fleet, the requests its memory use is worth: the
        larger of the two, as Kubernetes' HPA takes the larger of several metrics."""
        return max(value, (self.memory_load or 0.0) * per_replica_target)


@dataclass(frozen=True, slots=True)
class Bounds:
    min_replicas: int = 1
    max_replicas: int = 100

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(f"invalid replica bounds {self.min_replicas}..{self.max_replicas}")


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer.

    ``desired_replicas`` is already within bounds. ``limited_by`` is "max" or
    "min" when the bounds cut the policy's own recommendation
    (``recommended_replicas``): the operator's ScalingLimited condition.
    """

    desired_replicas: int
    reason: str
    recommended_replicas: int
    limited_by: str | None = None
    forecast_rate: float | None = None  # req/s the policy planned for, if it forecasts

    @property
    def scaling_limited(self) -> bool:
        return self.limited_by is not None


def bounded(
    recommended: int,
    bounds: Bounds,
    reason: str,
    forecast: float | None = None,
    goal: int | None = None,
) -> Decision:
    """Clamp a recommendation into bounds and say so in the reason.

    ``goal`` is where the policy is heading when rate limits or hysteresis
    make this tick's step smaller; the bounds check uses it, so ScalingLimited
    does not flicker while a policy steps toward a bound.
    """
    desired = min(max(recommended, bounds.min_replicas), bounds.max_replicas)
    wanted = recommended if goal is None else goal
    limited: str | None = None
    if wanted > bounds.max_replicas:
        limited = "max"
        reason += f"; capped at maxReplicas={bounds.max_replicas} (wanted {wanted})"
    elif wanted < bounds.min_replicas:
        limited = "min"
        reason += f"; held at minReplicas={bounds.min_replicas} (wanted {wanted})"
    return Decision(desired, reason, wanted, limited, forecast)


def hold(obs: Observation, bounds: Bounds, why: str) -> Decision:
    """Keep the current count (clamped into bounds): used on missing data."""
    return bounded(obs.current_replicas, bounds, f"holding at {obs.current_replicas}: {why}")
