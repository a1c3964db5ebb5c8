"""Build the engine a WorkerConfig names: the model, its tokenizer, the KV cache size."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from infleet_worker.config import Precision, WorkerConfig, effective_batch_buckets
from infleet_worker.engine.device import reserve_cpus, select_device, set_cpu_threads
from infleet_worker.generate.config import (
    ENGINE_PARAMS,
    ConfigError,
    EngineOptions,
    LlamaConfig,
    llama_from_params,
    options_from_params,
)
from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.engine_spec import (
    apply_engine_spec,
    attach_draft,
    load_draft,
    share_kv_with_draft,
)
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.generate.model_runner import kv_bytes_per_block
from infleet_worker.generate.sequence import SamplingParams
from infleet_worker.generate.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from infleet_worker.generate.weights import load_checkpoint, random_llama

log = logging.getLogger(__name__)

DTYPES = {
    Precision.FP32: torch.float32,
    Precision.FP16: torch.float16,
    Precision.BF16: torch.bfloat16,
}
GPU_HEADROOM_BYTES = 1 << 30  # activations, the attention gather, CUDA graphs
CPU_KV_SHARE = 0.25  # of physical memory, times kvCacheFraction


def engine_options(cfg: WorkerConfig) -> EngineOptions:
    b = cfg.batching
    opts = options_from_params(
        cfg.model.parameters,
        max_num_seqs=b.max_batch_size,
        max_waiting=b.max_queue_size,
        default_priority=b.default_priority_level,
        default_timeout_s=b.default_timeout_microseconds / 1e6,
        cuda_graphs=cfg.engine.cuda_graphs,
    )
    return apply_engine_spec(opts, cfg)  # engine.kvCache / engine.generation win


def load_model(
    source: str, params: dict[str, str], dtype: torch.dtype, device: torch.device
) -> tuple[LlamaForCausalLM, Tokenizer]:
    if source == "builtin://llama":
        lcfg = llama_from_params(params)
        if lcfg.vocab_size < 258:
            raise ConfigError(f"builtin://llama needs vocab >= 258 (bytes, BOS, EOS), got {lcfg}")
        return random_llama(lcfg, dtype, device), ByteTokenizer()
    if not source.startswith("file://"):
        raise ConfigError(f"{source} is not a generative model source")
    path = Path(source[len("file://") :])
    extra = sorted(set(params) - set(ENGINE_PARAMS))
    if extra:
        raise ConfigError(f"model parameters {extra} only apply to builtin://llama")
    model, lcfg = load_checkpoint(path, dtype, device)
    return model, _tokenizer(path, lcfg)


def _tokenizer(path: Path, lcfg: LlamaConfig) -> Tokenizer:
    if (path / "tokenizer.json").exists():
        return HFTokenizer(path, lcfg.bos_token_id, lcfg.eos_token_ids)
    if lcfg.vocab_size < 258:
        raise ConfigError(f"{path} has no tokenizer.json and too small a vocabulary for bytes")
    log.warning("%s has no tokenizer.json: using the byte-level tokenizer", path)
    return ByteTokenizer(
        bos_id=lcfg.bos_token_id if lcfg.bos_token_id is not None else 256,
        eos_id=lcfg.eos_token_ids[0] if lcfg.eos_token_ids else 257,
    )


def size_kv_cache(
    model: LlamaForCausalLM, opts: EngineOptions, dtype: torch.dtype, device: torch.device
) -> int:
    """Blocks for the pool: configured, else a fraction of the memory left after weights
    (GPU) or of physical memory (CPU), never more than every sequence at full context."""
    if opts.kv_cache_blocks:
        return opts.kv_cache_blocks
    per_block = kv_bytes_per_block(model.config, opts.block_size, dtype)
    max_len = min(opts.max_model_len or model.config.max_positions, model.config.max_positions)
    enough = opts.max_num_seqs * -(-max_len // opts.block_size) * 2  # 2x: room for prefixes
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * opts.kv_cache_fraction) - GPU_HEADROOM_BYTES
    else:
        import os

        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        budget = int(physical * CPU_KV_SHARE * opts.kv_cache_fraction)
    return max(1, min(enough, budget // per_block))


def build_core(cfg: WorkerConfig, metrics: GenerateMetrics | None = None) -> EngineCore:
    """Load, size the cache, capture decode graphs (GPU), warm up: ready to serve."""
    if cfg.engine.precision not in DTYPES:
        raise ConfigError(f"precision {cfg.engine.precision.value} is not supported for generation")
    if cfg.engine.pipeline_parallel != 1:
        raise ConfigError("pipelineParallel > 1 is not supported for generative models")
    device = select_device(cfg.engine.device.value)
    if device.type == "cpu":
        reserve_cpus(1)  # the event loop (HTTP, detokenizing, streaming) keeps one core
        set_cpu_threads()
    dtype = DTYPES[cfg.engine.precision]
    model, tokenizer = load_model(cfg.model.source, cfg.model.parameters, dtype, device)
    opts = engine_options(cfg)
    draft = load_draft(cfg, model, load_model)  # engine.speculative (engine_spec.py)
    blocks = share_kv_with_draft(
        size_kv_cache(model, opts, dtype, device), opts, model, draft, device
    )
    core = EngineCore(model, tokenizer, opts, blocks, device, dtype, metrics)
    attach_draft(core, draft, cfg, metrics)
    if device.type == "cuda" and opts.cuda_graphs:
        buckets = [b for b in effective_batch_buckets(cfg.engine, cfg.batching)]
        core.runner.capture_graphs(buckets, min(core.max_model_len, 4096))
    if cfg.engine.warmup:
        warm_up(core)
    log.info(
        "generation engine: %s on %s %s, %d KV blocks of %d tokens, context %d",
        cfg.model.source,
        device,
        dtype,
        blocks,
        opts.block_size,
        core.max_model_len,
    )
    return core


def warm_up(core: EngineCore) -> None:
    """One short greedy generation through prefill and decode (not counted in metrics)."""
    metrics, core.metrics = core.metrics, None
    try:
        seq = core.make_sequence([1, 2, 3], SamplingParams(max_tokens=2, temperature=0.0))
        core.add_sequence(seq, lambda out: None)
        with torch.inference_mode():
            while core.has_work:
                core.step()
    finally:
        core.metrics = metrics
        core.blocks.query_tokens = core.blocks.hit_tokens = 0
