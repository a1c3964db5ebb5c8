"""Sizes of a Llama-architecture model and the knobs of the generation engine.

Both come from ``model.parameters`` (string values, camelCase keys) of the worker
config; a checkpoint's sizes come from its config.json instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A model parameter or checkpoint config that cannot be used."""


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 172
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    max_positions: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    rms_eps: float = 1e-6
    tie_embeddings: bool = False
    bos_token_id: int | None = 256
    eos_token_ids: tuple[int, ...] = (257,)
    seed: int = 0

    def check(self) -> LlamaConfig:
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"heads ({self.num_heads}) must be a multiple of kvHeads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head dimension must be even, got {self.head_dim}")
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "max_positions"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{f} must be >= 1, got {getattr(self, f)}")
        return self


# builtin://llama presets: tiny runs on 2 CPU cores; 1b is Llama-3.2-1B's shape.
PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(),
    "1b": LlamaConfig(
        vocab_size=32768,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        max_positions=8192,
        rope_theta=500000.0,
        rms_eps=1e-5,
        tie_embeddings=True,
    ),
}

# model.parameters key -> LlamaConfig field (builtin://llama only).
SIZE_PARAMS = {
    "vocab": "vocab_size",
    "hidden": "hidden_size",
    "intermediate": "intermediate_size",
    "layers": "num_layers",
    "heads": "num_heads",
    "kvHeads": "num_kv_heads",
    "headDim": "head_dim",
    "maxPositions": "max_positions",
    "seed": "seed",
}


@dataclass(frozen=True)
class EngineOptions:
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # the token budget of one step
    max_model_len: int = 0  # 0 = the model's max_positions
    prefix_caching: bool = True
    kv_cache_fraction: float = 0.9  # of the device memory left after weights (GPU)
    kv_cache_blocks: int = 0  # 0 = sized from memory
    cuda_graphs: bool = True
    max_waiting: int = 1024
    default_priority: int = 1
    default_timeout_s: float = 30.0  # queue timeout before the first step; 0 = none
    max_tokens: int = 0  # most tokens a request may generate; 0 = what the context leaves


ENGINE_PARAMS = {
    "blockSize": "block_size",
    "maxNumSeqs": "max_num_seqs",
    "maxNumBatchedTokens": "max_num_batched_tokens",
    "maxModelLen": "max_model_len",
    "prefixCaching": "prefix_caching",
    "kvCacheFraction": "kv_cache_fraction",
    "kvCacheBlocks": "kv_cache_blocks",
}
KNOWN_PARAMS = {"preset", *SIZE_PARAMS, *ENGINE_PARAMS}


def _coerce(name: str, value: str, like: Any) -> Any:
    try:
        if isinstance(like, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        return type(like)(value)
    except ValueError:
        raise ConfigError(
            f"model parameter {name}={value!r} is not a valid {type(like).__name__}"
        ) from None


def check_params(params: dict[str, str]) -> None:
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise ConfigError(f"unknown model parameters {unknown}; known: {sorted(KNOWN_PARAMS)}")


def llama_from_params(params: dict[str, str]) -> LlamaConfig:
    """builtin://llama sizes: ``preset`` (tiny | 1b) then any single size overridden."""
    check_params(params)
    preset = params.get("preset", "tiny")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    base = PRESETS[preset]
    updates = {
        attr: _coerce(key, params[key], getattr(base, attr))
        for key, attr in SIZE_PARAMS.items()
        if key in params
    }
    if "hidden" in params and "headDim" not in params:
        updates["head_dim"] = updates["hidden_size"] // updates.get("num_heads", base.num_heads)
    return replace(base, **updates).check()


def options_from_params(params: dict[str, str], **overrides: Any) -> EngineOptions:
    base = EngineOptions(**overrides)
    updates = {
        attr: _coerce(key, params[key], getattr(base, attr))
        for key, attr in ENGINE_PARAMS.items()
        if key in params
    }
    opts = replace(base, **updates)
    if opts.block_size < 1 or opts.max_num_seqs < 1 or opts.max_num_batched_tokens < 1:
        raise ConfigError("blockSize, maxNumSeqs and maxNumBatchedTokens must be >= 1")
    if not 0 < opts.kv_cache_fraction <= 1:
        raise ConfigError(f"kvCacheFraction must be in (0, 1], got {opts.kv_cache_fraction}")
    return opts


def llama_from_hf(doc: dict[str, Any]) -> LlamaConfig:
    """Sizes from a Hugging Face config.json (Llama, Mistral, Qwen2-style without biases)."""
    # transformers >= 5 writes rope_parameters {rope_theta, rope_type, ...}; older
    # checkpoints (most on the Hub) rope_theta and rope_scaling at the top level.
    rope = doc.get("rope_parameters") or {}
    scaling = None
    if rope.get("rope_type", "default") != "default":
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
    try:
        heads = int(doc["num_attention_heads"])
        hidden = int(doc["hidden_size"])
        eos = doc.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        cfg = LlamaConfig(
            vocab_size=int(doc["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(doc["intermediate_size"]),
            num_layers=int(doc["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(doc.get("num_key_value_heads") or heads),
            head_dim=int(doc.get("head_dim") or hidden // heads),
            max_positions=int(doc.get("max_position_embeddings", 2048)),
            rope_theta=float(doc.get("rope_theta", rope.get("rope_theta", 10000.0))),
            rope_scaling=doc.get("rope_scaling") or scaling,
            rms_eps=float(doc.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(doc.get("tie_word_embeddings", False)),
            bos_token_id=doc.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"config.json lacks or mangles a Llama field: {e}") from None
    if doc.get("attention_bias") or doc.get("mlp_bias"):
        raise ConfigError("checkpoints with attention or MLP biases are not supported")
    return cfg.check()


def describe(cfg: LlamaConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
