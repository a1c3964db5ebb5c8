"""How many tokens the draft proposes per step: the k in 0..max that maximises the
expected tokens per unit of time, from the measured acceptance rate and the measured
cost of a draft forward relative to a target step.

With a per-token acceptance rate a, a step with k drafts emits 1 + a + ... + a^k tokens
on average and costs 1 + k * c target steps (c = draft forward / target step; verifying
k + 1 tokens costs about one step while the target is bound by its weights' reads). A
draft that rarely agrees drives k to 0: plain decoding, the draft idle, so a bad draft
costs little; every ``probe_every`` such steps one step speculates with k = 1 to see
whether the text got easier. Both estimates are moving averages (``alpha`` per step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DraftLength:
    max_tokens: int
    adaptive: bool = True
    acceptance: float = 0.7  # prior: per draft token
    cost: float = 0.2  # prior: a draft forward / a target step
    alpha: float = 0.1
    probe_every: int = 16
    idle_steps: int = 0

    def choose(self) -> int:
        if not self.adaptive:
            return self.max_tokens
        best = max(range(self.max_tokens + 1), key=self.speed)
        if best == 0:
            self.idle_steps += 1
            if self.idle_steps >= self.probe_every:
                self.idle_steps = 0
                return 1
        return best

    def speed(self, k: int) -> float:
        """Expected tokens per unit of time relative to plain decoding (= 1 at k = 0)."""
        a = self.acceptance
        return sum(a**i for i in range(k + 1)) / (1 + k * self.cost)

    def observe(
        self, proposed: int, accepted: int, draft_s: float, forwards: int, target_s: float
    ) -> None:
        """After a speculative step: drafts proposed / accepted, the draft's time over its
        forwards, the target's verify time."""
        if proposed:
            self.acceptance += self.alpha * (accepted / proposed - self.acceptance)
        if forwards and target_s > 0:
            self.cost += self.alpha * (draft_s / forwards / target_s - self.cost)
