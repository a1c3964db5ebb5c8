"""How many tokens the draft proposes per step: the k in 0..max with the most expected
tokens per second, from measured times and the measured acceptance rate.

With a per-token acceptance rate a, a step with k drafts emits 1 + a + ... + a^k tokens
on average and takes plain + k * (draft + extra) seconds: ``plain`` a plain decode step,
``draft`` one draft forward, ``extra`` what each further verified position adds to the
target's step (near 0 on a GPU, where a step is bound by reading the weights; more on
a CPU). A draft that rarely agrees drives k to 0: plain decoding with the draft idle,
so a bad draft costs little. Every ``probe_every`` steps the other mode runs once (a
plain step while speculating, k = 1 while idle) to keep both estimates fresh.
Estimates are moving averages (``alpha`` per observation).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DraftLength:
    max_tokens: int
    adaptive: bool = True
    acceptance: float = 0.7  # prior, per draft token
    plain_s: float | None = None  # measured by the first plain step
    draft_s: float | None = None  # prior: a fifth of a plain step
    extra_s: float = 0.0
    alpha: float = 0.2
    probe_every: int = 16
    steps: int = 0

    def choose(self) -> int:
        if not self.adaptive:
            return self.max_tokens
        if self.plain_s is None:
            return 0  # measure a plain step first
        self.steps += 1
        best = max(range(self.max_tokens + 1), key=self.speed)
        if self.steps % self.probe_every == 0:
            return 0 if best else 1
        return best

    def speed(self, k: int) -> float:
        """Expected tokens per second relative to plain decoding (1 at k = 0)."""
        plain = self.plain_s or 1.0
        draft = self.draft_s if self.draft_s is not None else plain / 5
        tokens = sum(self.acceptance**i for i in range(k + 1))
        return tokens * plain / (plain + k * (draft + self.extra_s))

    def _avg(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.alpha * (new - old)

    def observe_plain(self, seconds: float) -> None:
        self.plain_s = self._avg(self.plain_s, seconds)

    def observe(
        self, k: int, proposed: int, accepted: int, draft_s: float, verify_s: float
    ) -> None:
        """After a speculative step of k draft positions per sequence (at most):
        drafts proposed and accepted, the draft's time (k forwards), the target's."""
        if proposed:
            self.acceptance = self._avg(self.acceptance, accepted / proposed)
        if k:
            self.draft_s = self._avg(self.draft_s, draft_s / k)
            if self.plain_s is not None:
                self.extra_s = self._avg(self.extra_s, max(0.0, verify_s - self.plain_s) / k)
