"""Build a Llama model: seeded random weights (builtin://llama) or a Hugging Face
checkpoint directory (config.json + *.safetensors, sharded or not)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from infleet_worker.generate.config import ConfigError, LlamaConfig, llama_from_hf
from infleet_worker.generate.llama import LlamaForCausalLM


def random_llama(cfg: LlamaConfig, dtype: torch.dtype, device: torch.device) -> LlamaForCausalLM:
    """Seeded N(0, 0.02) weights, ones for the norms: the same model on every device."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.to(device=device, dtype=dtype).eval()


def read_hf_config(path: Path) -> LlamaConfig:
    try:
        doc = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path / 'config.json'}: {e}") from None
    archs = doc.get("architectures") or []
    if not any(a in ("LlamaForCausalLM", "MistralForCausalLM") for a in archs):
        raise ConfigError(
            f"{path}: architecture {archs} is not supported (LlamaForCausalLM, MistralForCausalLM)"
        )
    return llama_from_hf(doc)


def load_checkpoint(
    path: Path, dtype: torch.dtype, device: torch.device
) -> tuple[LlamaForCausalLM, LlamaConfig]:
    """Every tensor of every *.safetensors file in ``path``, names as in transformers."""
    cfg = read_hf_config(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{path} holds no *.safetensors files")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    model = LlamaForCausalLM(cfg)
    expected = set(model.state_dict())
    if cfg.tie_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(state))
    unexpected = sorted(k for k in set(state) - expected if "rotary_emb" not in k)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: checkpoint does not match the Llama layout "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=False)
    return model.to(device=device, dtype=dtype).eval(), cfg
