"""Shared helpers of the generation tests: a tiny transformers checkpoint, the Hugging
Face greedy reference, and a synchronous driver of the engine core."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.sequence import SamplingParams, TokenOutput

TINY_HF = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 256,
    "eos_token_id": 257,
    "tie_word_embeddings": False,
    "initializer_range": 0.1,
}


def save_tiny_checkpoint(path: Path, seed: int = 0, **overrides: Any) -> Any:
    """Random weights from transformers' own init, saved with save_pretrained."""
    import transformers  # test-only dependency

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**{**TINY_HF, **overrides})
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    return model


@torch.no_grad()
def hf_greedy(model: Any, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens by full recompute each step: the plainest possible reference."""
    ids = torch.tensor([prompt])
    out: list[int] = []
    for _ in range(n):
        token = int(model(ids).logits[0, -1].argmax())
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def core_for(source: str, **params: Any) -> EngineCore:
    cfg = WorkerConfig.model_validate(
        {
            "model": {
                "name": "tiny",
                "source": source,
                "parameters": {
                    k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()
                },
            },
            "engine": {"device": "cpu", "warmup": False},
            "batching": {"maxBatchSize": 16},
        }
    )
    return build_core(cfg)


def drive(
    core: EngineCore,
    prompts: list[list[int]],
    params: SamplingParams | list[SamplingParams],
    join_at: list[int] | None = None,
) -> list[list[int]]:
    """Run the core step by step; prompt i joins before step join_at[i]."""
    join_at = join_at or [0] * len(prompts)
    plist = params if isinstance(params, list) else [params] * len(prompts)
    outs: list[list[TokenOutput]] = [[] for _ in prompts]
    step = 0
    while step <= max(join_at) or core.has_work:
        for i, at in enumerate(join_at):
            if at == step:
                seq = core.make_sequence(prompts[i], plist[i])
                core.add_sequence(seq, outs[i].append)
        core.step()
        step += 1
    return [[o.token_id for o in out if o.token_id is not None] for out in outs]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
