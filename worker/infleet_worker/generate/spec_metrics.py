"""Prometheus series of speculative decoding, beside the engine's (docs/generation.md).

Counters of draft tokens proposed and accepted, and of sequence-steps the target
verified and the tokens they emitted: ``rate(accepted) / rate(draft)`` is the
acceptance rate, ``rate(emitted) / rate(verify_steps)`` the tokens per target step.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class SpecStats:
    """Totals since start (also read by tests and the benchmark)."""

    draft_tokens: int = 0
    accepted_tokens: int = 0
    verify_steps: int = 0  # one per sequence per speculative step
    emitted_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / max(1, self.draft_tokens)

    @property
    def tokens_per_step(self) -> float:
        return self.emitted_tokens / max(1, self.verify_steps)


class SpecMetrics:
    def __init__(self, model: str, version: str, registry: CollectorRegistry) -> None:
        names, lv = ("model", "version"), (model, version)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=registry).labels(*lv)

        self.draft = counter("infleet_generate_spec_draft_tokens", "Draft tokens proposed")
        self.accepted = counter(
            "infleet_generate_spec_accepted_tokens", "Draft tokens the target accepted"
        )
        self.verify_steps = counter(
            "infleet_generate_spec_verify_steps",
            "Sequence-steps verified by the target (one per sequence per speculative step)",
        )
        self.emitted = counter(
            "infleet_generate_spec_emitted_tokens",
            "Tokens emitted by speculative steps (accepted drafts + one from the target)",
        )
        self.acceptance = Gauge(
            "infleet_generate_spec_acceptance_ratio",
            "Accepted / proposed draft tokens since start",
            names,
            registry=registry,
        ).labels(*lv)
        self.tokens_per_step = Gauge(
            "infleet_generate_spec_tokens_per_step",
            "Tokens emitted per sequence per target step since start",
            names,
            registry=registry,
        ).labels(*lv)

    def bind(self, stats: SpecStats) -> None:
        self.acceptance.set_function(lambda: stats.acceptance_rate)
        self.tokens_per_step.set_function(lambda: stats.tokens_per_step)

    def record(self, draft: int, accepted: int, steps: int, emitted: int) -> None:
        self.draft.inc(draft)
        self.accepted.inc(accepted)
        self.verify_steps.inc(steps)
        self.emitted.inc(emitted)
