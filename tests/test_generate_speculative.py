"""Speculative decoding: greedy output equals plain greedy token for token (one sequence
and a continuous batch), sampled output has the target's distribution, both KV caches
stay consistent across rejections, prefix caching and preemption; metrics count."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from generate_fixtures import core_for, drive, greedy
from infleet_worker.generate.config import ConfigError, llama_from_params
from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.draft import first_layers
from infleet_worker.generate.rejection import accept_greedy, accept_sampled
from infleet_worker.generate.sequence import SamplingParams
from infleet_worker.generate.spec_metrics import SpecMetrics
from infleet_worker.generate.spec_policy import DraftLength
from infleet_worker.generate.speculative import SpeculativeDecoder
from infleet_worker.generate.weights import random_llama

SYSTEM = list(range(30, 62))  # a shared prefix: two full blocks of 16
PROMPTS = [[1, 2, 3, 4, 5], [*SYSTEM, 9, 8, 7], [7] * 20, [*SYSTEM, *range(100, 113)]]


def attach(
    core: EngineCore, layers: int | None, k: int = 4, adaptive: bool = False, **kw: object
) -> SpeculativeDecoder:
    """A draft of the target's first layers, or (layers None) an unrelated random model."""
    if layers is None:
        cfg = llama_from_params({"layers": "1", "seed": "7"})
        draft = random_llama(cfg, torch.float32, torch.device("cpu"))
    else:
        draft = first_layers(core.model, layers)
    spec = SpeculativeDecoder(core, draft, k, adaptive=adaptive, **kw)  # type: ignore[arg-type]
    core.speculative = spec
    return spec


def test_greedy_equals_plain_greedy_one_sequence() -> None:
    plain = drive(core_for("builtin://llama", layers=3, blockSize=4), PROMPTS[:1], greedy(40))
    for layers in (1, 3, None):
        core = core_for("builtin://llama", layers=3, blockSize=4)
        spec = attach(core, layers)
        assert drive(core, PROMPTS[:1], greedy(40)) == plain, layers
        assert spec.stats.verify_steps > 0
    assert spec.stats.accepted_tokens == 0  # the unrelated draft: still exact


@pytest.mark.parametrize("layers", [1, 3, None])
def test_greedy_equals_plain_greedy_continuous_batch(layers: int | None) -> None:
    """Mixed prompt lengths joining at different steps, a shared prefix, chunked prefill."""
    join = [0, 2, 3, 9]
    opts = {"layers": 3, "maxNumBatchedTokens": 24}
    plain = drive(core_for("builtin://llama", **opts), PROMPTS, greedy(30), join)
    core = core_for("builtin://llama", **opts)
    spec = attach(core, layers, k=3)
    assert drive(core, PROMPTS, greedy(30), join) == plain
    assert spec.stats.verify_steps > 0


def test_caches_stay_consistent_under_preemption_and_prefix_sharing() -> None:
    """A draft identical to the target must have every token accepted: any stale draft
    key/value (a rollback, a preempted sequence, a shared prefix block) would break it."""
    opts = {
        "layers": 2,
        "blockSize": 4,
        "kvCacheBlocks": 24,
        "maxModelLen": 64,
        "maxNumBatchedTokens": 16,
    }
    plain_core = core_for("builtin://llama", **opts)
    plain = drive(plain_core, PROMPTS, greedy(24), [0, 0, 1, 5])
    core = core_for("builtin://llama", **opts)
    spec = attach(core, 2, k=5)
    assert drive(core, PROMPTS, greedy(24), [0, 0, 1, 5]) == plain
    assert core.scheduler.preemptions > 0 and core.blocks.hit_tokens > 0
    assert spec.stats.acceptance_rate == 1.0
    assert core.blocks.num_free == core.blocks.num_blocks  # rolled-back blocks returned


def test_accept_greedy_keeps_the_matching_prefix_then_the_target_token() -> None:
    best = [1, 2, 3, 4]  # the target's argmax per position
    assert accept_greedy(best, [1, 2, 3]) == [1, 2, 3, 4]  # all + bonus
    assert accept_greedy(best, [1, 0, 3]) == [1, 2]  # corrected at the first mismatch


@pytest.mark.parametrize("k", [1, 3])
def test_rejection_sampling_has_the_targets_distribution(k: int) -> None:
    """Tokens emitted at the first and second position follow the target's p exactly,
    whatever the draft's q (here q is nearly the opposite of p, and zero on one token)."""
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]] * 2)[: k + 1]
    q = torch.tensor([[0.05, 0.15, 0.8, 0.0], [0.7, 0.1, 0.1, 0.1]] * 2)[:k]
    trials = 10000
    first = torch.zeros(4)
    second = torch.zeros(4)
    for _ in range(trials):
        drafts = [int(torch.multinomial(q[i], 1, generator=gen)) for i in range(k)]
        out = accept_sampled(p, q, drafts, gen)
        assert 1 <= len(out) <= k + 1
        first[out[0]] += 1
        if len(out) > 1:
            second[out[1]] += 1
    tv = 0.5 * (first / trials - p[0]).abs().sum()
    assert tv < 0.02, (first / trials, p[0])
    tv2 = 0.5 * (second / second.sum() - p[1]).abs().sum()
    assert tv2 < 0.04, (second / second.sum(), p[1])


def test_rejection_sampling_statistic_can_fail() -> None:
    """The same statistic on the draft's own distribution is far off (the test has power)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.tensor([0.05, 0.15, 0.8, 0.0])
    draws = torch.multinomial(q, 5000, replacement=True, generator=gen)
    freq = torch.bincount(draws, minlength=4).float() / 5000
    assert 0.5 * (freq - torch.tensor([0.5, 0.3, 0.15, 0.05])).abs().sum() > 0.5


def test_seeded_sampling_gives_the_tokens_of_plain_decoding() -> None:
    """A seeded request never speculates (its tokens must not depend on the adaptive k):
    the same tokens with a draft as without; unseeded sampling does speculate."""
    params = SamplingParams(max_tokens=21, temperature=0.8, top_k=50, seed=3, ignore_eos=True)
    plain = drive(core_for("builtin://llama", layers=2), PROMPTS[:2], params)
    core = core_for("builtin://llama", layers=2)
    spec = attach(core, 1, k=4, adaptive=True)
    assert drive(core, PROMPTS[:2], params) == plain
    assert [len(o) for o in plain] == [21, 21] and spec.stats.draft_tokens == 0
    unseeded = SamplingParams(max_tokens=21, temperature=0.8, ignore_eos=True)
    spec = attach(core, 2, k=4)
    assert [len(o) for o in drive(core, PROMPTS[:2], unseeded)] == [21, 21]
    assert spec.stats.acceptance_rate > 0.9  # identical draft: nearly all accepted


def test_metrics_and_bad_drafts() -> None:
    core = core_for("builtin://llama", layers=2)
    registry = CollectorRegistry()
    spec = attach(core, 2, k=3, metrics=SpecMetrics("m", "1", registry))
    drive(core, PROMPTS[:1], greedy(13))
    s = spec.stats
    assert (s.draft_tokens, s.accepted_tokens) == (9, 9) and s.tokens_per_step == 4.0
    labels = {"model": "m", "version": "1"}
    assert registry.get_sample_value("infleet_generate_spec_acceptance_ratio", labels) == 1.0
    assert registry.get_sample_value("infleet_generate_spec_emitted_tokens_total", labels) == 12
    assert registry.get_sample_value("infleet_generate_spec_tokens_per_step", labels) == 4.0
    other = random_llama(llama_from_params({"vocab": "300"}), torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeDecoder(core, other, 3)
    with pytest.raises(ConfigError, match=r"1\.\.2 layers"):
        first_layers(core.model, 3)


def test_adaptive_length_idles_a_draft_that_never_agrees() -> None:
    core = core_for("builtin://llama", layers=2)
    spec = attach(core, None, k=4, adaptive=True)
    plain = drive(core_for("builtin://llama", layers=2), PROMPTS[:1], greedy(60))
    assert drive(core, PROMPTS[:1], greedy(60)) == plain
    assert spec.stats.accepted_tokens <= 2 and spec.policy.acceptance < 0.5
    assert spec.stats.verify_steps < 20  # k fell to 0 after a few steps: most ran plain
    good = DraftLength(4)
    good.observe_plain(0.01)
    for _ in range(30):
        good.observe(4, 4, 4, 0.004, 0.01)  # all accepted; a forward at a tenth of a step
    assert [good.choose() for _ in range(16)] == [4] * 15 + [0]  # probes plain once
    worse = DraftLength(4, acceptance=0.5, plain_s=0.01, draft_s=0.003)
    assert worse.choose() == 1


def test_a_draft_of_first_layers_shares_weights_not_caches() -> None:
    core = core_for("builtin://llama", layers=2)
    draft = first_layers(core.model, 1)
    target_layer = core.model.model.layers[0]
    draft_layer = draft.model.layers[0]
    assert draft_layer.mlp is target_layer.mlp  # type: ignore[union-attr]
    assert draft.lm_head.weight is core.model.lm_head.weight
    assert len(core.model.model.layers) == 2 and core.model.config.num_layers == 2
    spec = attach(core, 1)
    assert draft_layer.self_attn is not target_layer.self_attn  # type: ignore[union-attr]
    target_cache = core.model.attention_layers()[0].k_cache
    assert spec.draft.attention_layers()[0].k_cache is not target_cache


def outputs(core: EngineCore, prompt: list[int], params: SamplingParams) -> list[Any]:
    got: list[Any] = []
    core.add_sequence(core.make_sequence(prompt, params), got.append)
    while core.has_work:
        core.step()
    return got


def test_logprobs_and_stop_ids_inside_an_accepted_run_match_plain_decoding() -> None:
    """Tokens 2..k+1 of a step get the same logprobs as plain decoding would give them,
    and a stop id in the middle of an accepted run ends the sequence right there."""
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, logprobs=2)
    plain = outputs(core_for("builtin://llama", layers=2), PROMPTS[0], params)
    core = core_for("builtin://llama", layers=2)
    spec = attach(core, 2, k=4)  # identical draft: every step accepts all 4
    fast = outputs(core, PROMPTS[0], params)
    assert [o.token_id for o in fast] == [o.token_id for o in plain]
    for a, b in zip(fast, plain, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.top_logprobs is not None and b.top_logprobs is not None
        assert list(a.top_logprobs) == list(b.top_logprobs)
    assert spec.stats.acceptance_rate == 1.0 and spec.stats.verify_steps == 4  # 1 + 5+5+5+4
    stop = plain[7].token_id  # the 2nd of 5 tokens of the second speculative step
    first = [o.token_id for o in plain].index(stop)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop_token_ids=(stop,))
    core = core_for("builtin://llama", layers=2)
    attach(core, 2, k=4)
    stopped = outputs(core, PROMPTS[0], params)
    assert [o.token_id for o in stopped] == [o.token_id for o in plain[: first + 1]]
    assert stopped[-1].finish_reason == "stop"
    assert core.blocks.num_free == core.blocks.num_blocks
