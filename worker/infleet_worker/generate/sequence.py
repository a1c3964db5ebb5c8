"""One generation request as the engine sees it: its tokens, blocks and sampling knobs."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum

import torch


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature 0 is greedy; ``logprobs`` None returns none,
    0 the chosen token's, k also the k most likely alternatives."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    priority: int | None = None  # 1 is the highest; None = the engine's default
    timeout_s: float | None = None  # queue timeout; None = the engine's default, 0 = none

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TokenOutput:
    """What one step produced for one sequence: streamed to its client."""

    token_id: int | None
    text: str
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None
    finish_reason: str | None = None  # stop | length | abort | timeout | error
    error: str | None = None


_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    token_ids: list[int]
    params: SamplingParams
    priority: int
    deadline: float | None  # monotonic time by which the first step must start
    seq_id: int = field(default_factory=lambda: next(_ids))
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache (first admission)
    max_tokens: int = 16
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # of the full blocks, in order
    status: Status = Status.WAITING
    arrival: float = field(default_factory=time.monotonic)
    started: bool = False  # has been scheduled once (queue timeout no longer applies)
    finish_reason: str | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.num_prompt_tokens = len(self.token_ids)
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status == Status.FINISHED

    def sort_key(self) -> tuple[int, float, int]:
        """Higher priority (smaller number) first, then first come."""
        return (self.priority, self.arrival, self.seq_id)
