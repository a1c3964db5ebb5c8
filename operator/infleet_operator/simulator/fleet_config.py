"""How the encoder fleet is set up: batching, load balancing, pod starts, metrics, overload."""

from __future__ import annotations

from dataclasses import dataclass

from infleet_operator.simulator.service import DEFAULT_TABLE


@dataclass(frozen=True)
class FleetConfig:
    service_table: tuple[tuple[int, float], ...] = DEFAULT_TABLE
    max_batch: int = 16
    max_queue_delay_s: float = 0.005
    request_timeout_s: float = 30.0  # waiting longer than this before a batch = dropped
    lb: str = "least-queue"  # or "round-robin"
    start_delay_s: float = 120.0  # pod created -> Ready
    start_jitter: float = 0.2  # uniform +-20% of the delay
    # Start-to-Ready of each pod the autoscaler creates, in order (a live run's, replayed);
    # pods past the end of it start in start_delay_s (with jitter).
    start_delays: tuple[float, ...] = ()
    scrape_interval_s: float = 5.0
    metric_lag_s: float = 2.0
    tick_s: float = 2.0
    tick_phase_s: float | None = None  # first decision (then every tick_s); None: at tick_s
    scrape_at_tick: bool = False  # the operator's pod mode: scrape at each decision, no lag
    # Adaptive batching under overload (least-queue): while more than
    # overload_queue_per_replica requests wait per serving replica, batches grow
    # to overload_max_batch with overload_queue_delay_s. 0 = off.
    overload_max_batch: int = 0
    overload_queue_delay_s: float = 0.0
    overload_queue_per_replica: float = 8.0
    # Priority levels: share of requests at level 1 (highest), 2, ...; () = all level 1.
    priority_shares: tuple[float, ...] = ()
    shed_queue_per_replica: float = 0.0  # > 0: priority shedding (least-queue), see shedding.py
    initial_replicas: int = 0  # 0: enough for the first minute at 70% of saturation
    seed: int = 0
