"""Which draft tokens the target accepts: greedy (the target's argmax, token for token)
or rejection sampling (Leviathan et al. 2023; Chen et al. 2023), whose output has
exactly the target's distribution whatever the draft proposes.

Given the target's probabilities p_0..p_k (p_i for the position after draft token i)
and the draft's q_0..q_{k-1} for the k tokens d_1..d_k it sampled: accept d_i with
probability min(1, p(d_i) / q(d_i)); on the first rejection draw from
norm(max(0, p - q)) and stop; when all k are accepted draw a bonus token from p_k.
Every call returns between 1 and k + 1 tokens.
"""

from __future__ import annotations

import torch


def accept_greedy(best: list[int], drafts: list[int]) -> list[int]:
    """best: the target's argmax at each of the k + 1 positions. The drafts that match
    it, then the target's own token (the correction, or the bonus after all k)."""
    out: list[int] = []
    for i, d in enumerate(drafts):
        if best[i] != d:
            break
        out.append(d)
    out.append(best[len(out)])
    return out


def accept_sampled(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    drafts: list[int],
    generator: torch.Generator | None,
) -> list[int]:
    """target_probs [k + 1, vocab], draft_probs [k, vocab] (the filtered distributions each
    model sampled from, float32 on the CPU)."""
    out: list[int] = []
    for i, d in enumerate(drafts):
        p, q = float(target_probs[i, d]), float(draft_probs[i, d])
        u = float(torch.rand((), generator=generator))
        if u * q < p:  # accept with probability min(1, p / q); q > 0 as d was drawn from q
            out.append(d)
            continue
        residual = (target_probs[i] - draft_probs[i]).clamp_min(0.0)
        total = float(residual.sum())
        dist = residual / total if total > 0 else target_probs[i]
        out.append(int(torch.multinomial(dist, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[len(drafts)], 1, generator=generator)))
    return out
