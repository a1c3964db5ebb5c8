"""Greedy generation equals Hugging Face transformers' LlamaForCausalLM token for token,
through the file:// loader, alone and in a continuous batch; prefix caching and
preemption change nothing; a seeded sampled request repeats."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import transformers

from generate_fixtures import core_for, drive, greedy, hf_greedy, save_tiny_checkpoint
from infleet_worker.generate import is_generative
from infleet_worker.generate.sequence import SamplingParams

N = 12


@pytest.fixture(scope="module")
def checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, transformers.LlamaForCausalLM]:
    path = tmp_path_factory.mktemp("tiny-llama")
    return path, save_tiny_checkpoint(path)


def prompts(lengths: list[int], seed: int = 1, shared: list[int] | None = None) -> list[list[int]]:
    rng = random.Random(seed)
    return [(shared or []) + [rng.randrange(300) for _ in range(n)] for n in lengths]


def test_file_source_is_generative(checkpoint: tuple[Path, transformers.LlamaForCausalLM]) -> None:
    path, _ = checkpoint
    assert is_generative(f"file://{path}")
    assert is_generative("builtin://llama")
    assert not is_generative("builtin://mlp")
    assert not is_generative(f"file://{path}/missing")


def test_one_sequence_matches_transformers(
    checkpoint: tuple[Path, transformers.LlamaForCausalLM],
) -> None:
    path, hf = checkpoint
    core = core_for(f"file://{path}")
    prompt = prompts([37])[0]
    assert drive(core, [prompt], greedy(N)) == [hf_greedy(hf, prompt, N)]


def test_llama3_shape_matches_transformers(tmp_path: Path) -> None:
    """Llama 3.2's extras: tied embeddings and Llama 3 rope scaling (felt past 64 tokens
    here), with a head dimension that is not hidden / heads."""
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    hf = save_tiny_checkpoint(
        tmp_path, seed=4, tie_word_embeddings=True, rope_scaling=scaling, rope_theta=500000.0,
        head_dim=32,
    )  # fmt: skip
    core = core_for(f"file://{tmp_path}")
    ps = prompts([90, 7], seed=4)
    assert drive(core, ps, greedy(N)) == [hf_greedy(hf, p, N) for p in ps]


def test_continuous_batch_matches_transformers(
    checkpoint: tuple[Path, transformers.LlamaForCausalLM],
) -> None:
    """Mixed prompt lengths joining at different steps, prompts chunked by a small token
    budget and spanning several blocks: each sequence still equals its reference."""
    path, hf = checkpoint
    core = core_for(f"file://{path}", blockSize=8, maxNumBatchedTokens=24)
    ps = prompts([5, 40, 17, 70, 1])
    got = drive(core, ps, greedy(N), join_at=[0, 0, 3, 5, 9])
    assert got == [hf_greedy(hf, p, N) for p in ps]


def test_prefix_caching_on_and_off_agree(
    checkpoint: tuple[Path, transformers.LlamaForCausalLM],
) -> None:
    path, hf = checkpoint
    system = prompts([48], seed=7)[0]
    ps = prompts([3, 9, 21], seed=2, shared=system)
    on = core_for(f"file://{path}", blockSize=8)
    first = drive(on, ps[:1], greedy(N))  # computes and caches the shared blocks
    rest = drive(on, ps[1:], greedy(N))
    assert on.blocks.hit_tokens >= 2 * 48  # the later two reused the system prompt
    off = core_for(f"file://{path}", blockSize=8, prefixCaching=False)
    assert first + rest == drive(off, ps, greedy(N))
    assert off.blocks.hit_tokens == 0
    assert first + rest == [hf_greedy(hf, p, N) for p in ps]
    # Joining while the shared prompt is still being prefilled in chunks.
    racing = core_for(f"file://{path}", blockSize=8, maxNumBatchedTokens=16)
    assert drive(racing, ps, greedy(N), join_at=[0, 1, 2]) == first + rest
    assert racing.blocks.hit_tokens > 0


def test_preemption_and_resumption_agree(
    checkpoint: tuple[Path, transformers.LlamaForCausalLM],
) -> None:
    """A pool of 14 blocks of 8 tokens for 4 sequences of up to 57 tokens: running
    sequences are preempted and recomputed, and their tokens do not change."""
    path, hf = checkpoint
    ps = prompts([30, 41, 25, 45], seed=3)
    core = core_for(f"file://{path}", blockSize=8, kvCacheBlocks=14, maxModelLen=100)
    got = drive(core, ps, greedy(N))
    assert core.scheduler.preemptions > 0
    assert core.blocks.num_free == core.blocks.num_blocks
    assert got == [hf_greedy(hf, p, N) for p in ps]


def test_seeded_sampling_repeats(checkpoint: tuple[Path, transformers.LlamaForCausalLM]) -> None:
    path, _ = checkpoint
    core = core_for(f"file://{path}")
    prompt = prompts([20])[0]

    def sampled(seed: int) -> list[int]:
        params = SamplingParams(
            max_tokens=16, temperature=1.0, top_p=0.9, seed=seed, ignore_eos=True
        )
        return drive(core, [prompt], params)[0]

    assert sampled(1234) == sampled(1234)
    assert sampled(1234) != sampled(99)
