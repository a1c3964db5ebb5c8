"""A draft model cut from the target itself: its first layers, with the target's own
embedding, final norm and head (self-speculation: it agrees often when the target's
later layers change the hidden state little). Any other draft loads like a target
(loader.load_model).

The cut shares the target's weights (no copy: a draft of a 1B model costs no weight
memory); only its attention modules are its own, so its KV cache is separate.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import TypeVar

from torch import nn

from infleet_worker.generate.config import ConfigError
from infleet_worker.generate.llama import LlamaForCausalLM

M = TypeVar("M", bound=nn.Module)


def _shallow(module: M) -> M:
    """The same parameters and submodules, its own table of submodules to replace."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def first_layers(model: LlamaForCausalLM, layers: int) -> LlamaForCausalLM:
    """``model`` cut to its first ``layers`` decoder layers, sharing its weights."""
    if not 1 <= layers <= model.config.num_layers:
        raise ConfigError(
            f"a draft of the target's first layers needs 1..{model.config.num_layers} "
            f"layers, got {layers}"
        )
    draft = _shallow(model)
    draft.model = _shallow(model.model)
    cut = []
    for layer in list(model.model.layers)[:layers]:
        own = _shallow(layer)
        own.self_attn = copy.copy(layer.self_attn)  # its own k_cache / v_cache attributes
        cut.append(own)
    draft.model.layers = nn.ModuleList(cut)
    draft.config = replace(model.config, num_layers=layers)
    return draft
