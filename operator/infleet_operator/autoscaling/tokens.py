"""The autoscaling signal of a generative fleet: demand against capacity in tokens.

A generating replica is full when one of three things runs out: sequences it decodes
together, KV cache blocks (memory for the tokens of the running sequences), or decode
throughput (generated tokens/s). The workers export all three
(``infleet_generate_*``, docs/generation.md); :class:`TokenSignal` turns their fleet
totals into the one :class:`Observation` every policy reads:

- ``queue_depth`` / ``in_flight``: waiting / running sequences (hpa and kpa compare
  them with ``targetQueueDepthPerReplica``, in sequences per replica);
- ``arrival_rate``: token demand, new sequences/s x generated tokens per sequence, and
  ``completion_rate``: generated tokens/s (predictive plans and learns in tokens/s);
- ``work_per_request``: generated tokens per sequence, so a waiting sequence counts
  as the tokens it will ask for in predictive's backlog;
- ``memory_load``: KV blocks in use / (blocks per replica x ``targetKvCacheUsage``),
  the replicas the memory in use fills at the target; every policy scales to at
  least that (long contexts fill memory before they fill the batch or the device).

Pure: numbers in, an Observation out.
"""

from __future__ import annotations

from dataclasses import dataclass

from infleet_operator.autoscaling.observations import Observation

DEFAULT_KV_TARGET = 0.8
DEFAULT_TOKENS_PER_SEQUENCE = 128.0  # until a sequence has finished


@dataclass(frozen=True, slots=True)
class TokenLoad:
    """A generative fleet's load at one tick, summed over its ready replicas."""

    waiting: float  # sequences waiting to join a batch
    running: float  # sequences in the batch (decoding or prefilling)
    kv_blocks_used: float
    kv_blocks: float  # KV blocks in the pools
    arrival_rate: float  # new sequences/s
    token_rate: float  # generated tokens/s
    tokens_per_sequence: float | None = None  # generated per finished sequence; None: none yet


@dataclass(frozen=True)
class TokenSignal:
    """How token load becomes an observation; one per generative fleet's spec."""

    kv_target: float = DEFAULT_KV_TARGET  # KV usage at which a replica counts as full
    default_tokens_per_sequence: float = DEFAULT_TOKENS_PER_SEQUENCE

    def __post_init__(self) -> None:
        if not 0 < self.kv_target <= 1:
            raise ValueError(f"KV cache target usage must be in (0, 1], got {self.kv_target}")

    def observation(
        self, time: float, current_replicas: int, ready_replicas: int, load: TokenLoad
    ) -> Observation:
        per_seq = load.tokens_per_sequence or self.default_tokens_per_sequence
        memory = 0.0
        if load.kv_blocks > 0:
            memory = load.kv_blocks_used / load.kv_blocks * ready_replicas / self.kv_target
        return Observation(
            time=time,
            current_replicas=current_replicas,
            ready_replicas=ready_replicas,
            queue_depth=load.waiting,
            in_flight=load.running,
            arrival_rate=max(load.arrival_rate * per_seq, load.token_rate),
            completion_rate=load.token_rate,
            work_per_request=per_seq,
            memory_load=memory,
        )
