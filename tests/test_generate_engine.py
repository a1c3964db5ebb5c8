"""The generation engine's parts on the builtin tiny Llama: block manager, scheduler,
sampler, detokenizer, limits, aborts. (Reference equality is test_generate_reference.)"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

from generate_fixtures import core_for, drive, greedy
from infleet_worker.config import WorkerConfig
from infleet_worker.generate import is_generative
from infleet_worker.generate.block_manager import BlockManager
from infleet_worker.generate.config import ConfigError, llama_from_hf, llama_from_params
from infleet_worker.generate.detok import Detokenizer
from infleet_worker.generate.engine import EngineDead, GenerateEngine, QueueFull
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.model_runner import kv_bytes_per_block
from infleet_worker.generate.sampler import sample
from infleet_worker.generate.sequence import SamplingParams, Sequence
from infleet_worker.generate.server import run_generate_worker
from infleet_worker.generate.tokenizer import ByteTokenizer


def seq_of(tokens: list[int]) -> Sequence:
    return Sequence(tokens, SamplingParams(), priority=1, deadline=None)


def test_prefix_blocks_shared_and_evicted_lru() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq_of([1, 2, 3, 4, 5])
    bm.append_slots(a, 5)
    a.num_computed_tokens = 5
    bm.cache_full_blocks(a)  # blocks [1,2] and [3,4] published
    b = seq_of([1, 2, 3, 4, 9])
    assert bm.take_cached_prefix(b) == 4 and b.block_table == a.block_table[:2]
    assert bm.blocks[a.block_table[0]].ref_count == 2
    c = seq_of([9, 1, 2, 3, 4])  # same tokens at another position: no hit
    assert bm.take_cached_prefix(c) == 0
    bm.free_blocks(b)
    bm.free_blocks(a)
    assert bm.num_free == 4 and len(bm.cached) == 2
    d = seq_of([7, 7, 7, 7, 7, 7])  # needs 3 blocks: the unhashed one, then LRU evictions
    bm.append_slots(d, 6)
    assert len(bm.cached) == 1  # the tail block [3,4] went first; [1,2] survives
    e = seq_of([1, 2, 8])
    assert bm.take_cached_prefix(e) == 2


def test_all_cached_prompt_still_computes_one_token() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq_of([1, 2, 3, 4])
    bm.append_slots(a, 4)
    a.num_computed_tokens = 4
    bm.cache_full_blocks(a)
    b = seq_of([1, 2, 3, 4])
    assert bm.take_cached_prefix(b) == 2  # the last block is recomputed for its logits


def test_decodes_run_beside_a_chunked_long_prompt() -> None:
    core = core_for("builtin://llama", blockSize=8, maxNumBatchedTokens=16)
    short = core.make_sequence([1, 2, 3], greedy(30))
    core.add_sequence(short, lambda out: None)
    core.step()
    long = core.make_sequence(list(range(1, 120)), greedy(2))
    core.add_sequence(long, lambda out: None)
    before = short.num_output_tokens
    for _ in range(5):
        core.step()
    assert short.num_output_tokens == before + 5  # one token per step, never stalled
    assert 0 < long.num_computed_tokens < 119  # the long prompt advanced in chunks


def test_higher_priority_joins_first() -> None:
    core = core_for("builtin://llama", maxNumBatchedTokens=8)
    low = core.make_sequence([1] * 8, SamplingParams(max_tokens=1, temperature=0, priority=2))
    high = core.make_sequence([2] * 8, SamplingParams(max_tokens=1, temperature=0, priority=1))
    core.add_sequence(low, lambda out: None)
    core.add_sequence(high, lambda out: None)
    batch = core.scheduler.schedule()
    assert batch.seqs == [high]


def test_queue_timeout_and_abort_free_everything() -> None:
    core = core_for("builtin://llama")
    got: list = []
    seq = core.make_sequence([1, 2, 3], SamplingParams(max_tokens=50, timeout_s=0.001))
    core.add_sequence(seq, got.append)
    time.sleep(0.01)
    core.step()
    assert got[-1].finish_reason == "timeout"
    seq = core.make_sequence([1, 2, 3], greedy(50))
    core.add_sequence(seq, got.append)
    core.step()
    core.step()
    assert core.blocks.num_free < core.blocks.num_blocks
    core.abort(seq.seq_id)
    assert got[-1].finish_reason == "abort"
    assert core.blocks.num_free == core.blocks.num_blocks and not core.has_work


def test_max_tokens_clipped_and_long_prompt_refused() -> None:
    core = core_for("builtin://llama", maxModelLen=64)
    seq = core.make_sequence([1] * 60, greedy(100))
    assert seq.max_tokens == 4
    assert (
        drive(core, [[1] * 60], greedy(100)) and len(drive(core, [[1] * 60], greedy(100))[0]) == 4
    )
    with pytest.raises(ValueError, match="context is 64 tokens"):
        core.make_sequence([1] * 64, greedy(1))


def test_stop_strings_cut_the_text_across_tokens() -> None:
    tok = ByteTokenizer()
    d = Detokenizer(tok, ("END",))
    ids: list[int] = []
    released = ""
    for ch in "abcEN":
        ids.append(ord(ch))
        text, stopped = d.update(ids)
        released += text
        assert not stopped
    assert released == "abc"  # "EN" is held: it may become "END"
    ids.append(ord("D"))
    text, stopped = d.update(ids)
    assert stopped and released + text == "abc"


def test_utf8_is_released_whole() -> None:
    d = Detokenizer(ByteTokenizer(), ())
    data = list("é".encode())
    assert d.update(data[:1]) == ("", False)
    assert d.update(data) == ("é", False)


def test_sampler_top_k_and_top_p() -> None:
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]] * 200)
    gens = [torch.Generator().manual_seed(i) for i in range(200)]
    top1 = sample(logits, [SamplingParams(temperature=1.0, top_k=1)] * 200, gens)
    assert {c[0] for c in top1} == {0}
    nucleus = sample(logits, [SamplingParams(temperature=1.0, top_p=0.8)] * 200, gens)
    assert {c[0] for c in nucleus} == {0, 1}
    lp = sample(logits[:1], [SamplingParams(temperature=0.0, logprobs=2)], [None])[0]
    assert lp[0] == 0 and lp[1] == pytest.approx(float(logits[0].log_softmax(-1)[0]))
    assert list(lp[2] or {}) == [0, 1]


def test_size_parameters_checked() -> None:
    assert (
        llama_from_params({"layers": "3", "hidden": "96", "heads": "6", "kvHeads": "2"}).head_dim
        == 16
    )
    with pytest.raises(ConfigError, match="unknown model parameters"):
        llama_from_params({"layer": "3"})
    with pytest.raises(ConfigError, match="multiple of kvHeads"):
        llama_from_params({"heads": "4", "kvHeads": "3"})


async def test_async_stream_and_cancellation_frees_blocks() -> None:
    engine = GenerateEngine(core_for("builtin://llama"))
    engine.start()
    try:
        texts = [o async for o in engine.generate([1, 2, 3], greedy(5))]
        assert len(texts) == 5 and texts[-1].finish_reason == "length"
        gen = engine.generate([1, 2, 3], greedy(10_000))
        await anext(gen)
        await gen.aclose()  # the client went away
        for _ in range(100):
            if not engine.core.has_work:
                break
            await asyncio.sleep(0.02)
        blocks = engine.core.blocks
        assert not engine.core.has_work and blocks.num_free == blocks.num_blocks
    finally:
        engine.stop()


def test_hf_config_rope_in_both_layouts() -> None:
    base = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    scaling = {"rope_type": "llama3", "factor": 8.0}
    old = llama_from_hf({**base, "rope_theta": 5e5, "rope_scaling": scaling})  # the Hub's
    new = llama_from_hf({**base, "rope_parameters": {"rope_theta": 5e5, **scaling}})  # v5
    assert old.rope_theta == new.rope_theta == 5e5
    assert old.rope_scaling == new.rope_scaling == scaling
    plain = llama_from_hf({**base, "rope_parameters": {"rope_theta": 1e4, "rope_type": "default"}})
    assert plain.rope_scaling is None and plain.num_kv_heads == 4


def test_stop_string_ends_a_sequence() -> None:
    core = core_for("builtin://llama")

    def run(params: SamplingParams) -> list:
        outs: list = []
        core.add_sequence(core.make_sequence([256, 72, 105], params), outs.append)
        while core.has_work:
            core.step()
        return outs

    text = "".join(o.text for o in run(greedy(40)))
    k = next(
        i
        for i in range(3, len(text) - 2)
        if "\ufffd" not in text[i : i + 2] and text.find(text[i : i + 2]) == i
    )
    stop = text[k : k + 2]
    outs = run(SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=(stop,)))
    assert "".join(o.text for o in outs) == text[:k]
    assert outs[-1].finish_reason == "stop" and len(outs) < 40


def test_unsupported_checkpoint_fails_to_start(tmp_path: Path) -> None:
    """A *ForCausalLM directory dispatches here; an architecture we cannot run is a
    load failure naming it (exit 1), not a crash."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2ForCausalLM"]}))
    assert is_generative(f"file://{tmp_path}")
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": f"file://{tmp_path}"},
            "engine": {"device": "cpu"},
            "server": {"host": "127.0.0.1", "httpPort": 0, "grpcPort": 0, "metricsPort": 0},
        }
    )
    with pytest.raises(ConfigError, match="GPT2ForCausalLM"):
        build_core(cfg)
    assert asyncio.run(run_generate_worker(cfg)) == 1


def test_1b_preset_shape() -> None:
    cfg = llama_from_params({"preset": "1b"})
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (16, 2048, 32, 8)
    assert kv_bytes_per_block(cfg, 16, torch.bfloat16) == 2 * 16 * 16 * 8 * 64 * 2


async def test_a_failing_step_fails_its_sequences_and_marks_the_engine_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = core_for("builtin://llama")

    def broken(batch: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(core.runner, "run_model", broken)
    engine = GenerateEngine(core)
    engine.start()
    try:
        outs = [o async for o in engine.generate([1, 2, 3], greedy(5))]
        assert outs[-1].finish_reason == "error" and "illegal memory access" in (
            outs[-1].error or ""
        )
        assert engine.dead.wait(5)
        with pytest.raises(EngineDead):
            engine.submit([1, 2], greedy(1), lambda out: None)
    finally:
        engine.stop()


def test_a_full_waiting_queue_refuses_at_once() -> None:
    core = core_for("builtin://llama")
    core.opts = dataclasses.replace(core.opts, max_waiting=2)
    engine = GenerateEngine(core)  # not started: nothing leaves the queue
    for _ in range(2):
        engine.submit([1, 2, 3], greedy(1), lambda out: None)
    with pytest.raises(QueueFull, match="2 sequences are already waiting"):
        engine.submit([1, 2, 3], greedy(1), lambda out: None)
