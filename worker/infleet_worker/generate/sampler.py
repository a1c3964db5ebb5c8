"""Pick the next token of each sequence from its logits: greedy, or temperature with
top-k / top-p, from the request's own seeded generator when it set a seed."""

from __future__ import annotations

import torch

from infleet_worker.generate.sequence import SamplingParams

Choice = tuple[int, float | None, dict[int, float] | None]  # token, logprob, top alternatives


def _filter(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on one row of logits."""
    logits = logits / p.temperature
    if 0 < p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > p.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[Choice]:
    """logits [N, vocab] float -> one choice per row."""
    want_logprobs = any(p.logprobs is not None for p in params)
    if all(p.greedy for p in params) and not want_logprobs:
        return [(int(t), None, None) for t in logits.argmax(-1).tolist()]
    logits = logits.float().cpu()
    logprobs = logits.log_softmax(-1) if want_logprobs else None
    out: list[Choice] = []
    for i, p in enumerate(params):
        row = logits[i]
        if p.greedy:
            token = int(row.argmax())
        else:
            probs = _filter(row, p).softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=generators[i]))
        lp: float | None = None
        top: dict[int, float] | None = None
        if logprobs is not None and p.logprobs is not None:
            lp = float(logprobs[i, token])
            if p.logprobs > 0:
                vals, ids = torch.topk(logprobs[i], p.logprobs)
                top = dict(zip(ids.tolist(), vals.tolist(), strict=True))
        out.append((token, lp, top))
    return out
