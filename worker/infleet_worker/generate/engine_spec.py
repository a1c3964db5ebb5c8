"""The typed generation sections of the spec (engine.kvCache, engine.generation,
engine.speculative; worker config.py) applied to the engine: they override the
model.parameters keys of the same knobs, and naming one knob in both is an error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.config import ENGINE_PARAMS, ConfigError, EngineOptions
from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.draft import first_layers
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.generate.spec_metrics import SpecMetrics
from infleet_worker.generate.speculative import SpeculativeDecoder

# EngineOptions field -> the spec field that sets it.
SPEC_FIELDS = {
    "block_size": "engine.kvCache.blockSize",
    "kv_cache_fraction": "engine.kvCache.memoryFraction",
    "prefix_caching": "engine.kvCache.prefixCaching",
    "kv_cache_blocks": "engine.kvCache.blocks",
    "max_model_len": "engine.generation.maxContextTokens",
    "max_num_seqs": "engine.generation.maxRunningSequences",
    "max_num_batched_tokens": "engine.generation.maxBatchedTokens",
}


def spec_updates(cfg: WorkerConfig) -> dict[str, Any]:
    kv, gen = cfg.engine.kv_cache, cfg.engine.generation
    updates: dict[str, Any] = {}
    if kv is not None:
        updates.update(
            block_size=kv.block_size,
            kv_cache_fraction=kv.memory_fraction,
            prefix_caching=kv.prefix_caching,
        )
        if kv.blocks is not None:
            updates["kv_cache_blocks"] = kv.blocks
    if gen is not None:
        updates["max_num_batched_tokens"] = gen.max_batched_tokens
        if gen.max_context_tokens is not None:
            updates["max_model_len"] = gen.max_context_tokens
        if gen.max_running_sequences is not None:
            updates["max_num_seqs"] = gen.max_running_sequences
        if gen.max_tokens is not None:
            updates["max_tokens"] = gen.max_tokens
    return updates


def apply_engine_spec(opts: EngineOptions, cfg: WorkerConfig) -> EngineOptions:
    updates = spec_updates(cfg)
    for key, attr in ENGINE_PARAMS.items():
        if key in cfg.model.parameters and attr in updates:
            raise ConfigError(
                f"model.parameters.{key} and {SPEC_FIELDS[attr]} set the same knob: "
                f"keep {SPEC_FIELDS[attr]}"
            )
    return replace(opts, **updates)


Loader = Callable[[str, dict[str, str], torch.dtype, torch.device], tuple[LlamaForCausalLM, Any]]


def load_draft(
    cfg: WorkerConfig, target: LlamaForCausalLM, load: Loader
) -> LlamaForCausalLM | None:
    """engine.speculative's draft: cut from the target (sharing its weights) or loaded."""
    spec = cfg.engine.speculative
    if spec is None:
        return None
    if spec.target_layers is not None:
        return first_layers(target, spec.target_layers)
    assert spec.source is not None  # the config's own rule
    p = next(target.parameters())
    draft, _ = load(spec.source, spec.parameters, p.dtype, p.device)
    return draft


def share_kv_with_draft(
    blocks: int,
    opts: EngineOptions,
    target: LlamaForCausalLM,
    draft: LlamaForCausalLM | None,
    device: torch.device,
) -> int:
    """On a GPU the draft's KV cache (same blocks, its own layers) comes out of the same
    memory budget: the pool shrinks by target / (target + draft) bytes per block."""
    if draft is None or opts.kv_cache_blocks or device.type != "cuda":
        return blocks
    t = target.config.num_layers * target.config.num_kv_heads * target.config.head_dim
    d = draft.config.num_layers * draft.config.num_kv_heads * draft.config.head_dim
    return max(1, blocks * t // (t + d))


def attach_draft(
    core: EngineCore,
    draft: LlamaForCausalLM | None,
    cfg: WorkerConfig,
    metrics: GenerateMetrics | None,
) -> None:
    """Hook the draft into the engine core (speculative.py)."""
    spec = cfg.engine.speculative
    if draft is None or spec is None:
        return
    spec_metrics = None
    if metrics is not None:
        spec_metrics = SpecMetrics(*metrics.labels, metrics.registry)
    try:
        core.speculative = SpeculativeDecoder(
            core, draft, spec.num_tokens, spec_metrics, adaptive=spec.adaptive
        )
    except ValueError as e:
        raise ConfigError(f"engine.speculative: {e}") from None
