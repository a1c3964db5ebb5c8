"""A draft model cut from the target itself: its first layers, with the target's own
embedding, final norm and head. It agrees often when the target's later layers change
little (self-speculation); any other draft loads like a target (loader.load_model)."""

from __future__ import annotations

import copy
from dataclasses import replace

from infleet_worker.generate.config import ConfigError
from infleet_worker.generate.llama import LlamaForCausalLM


def first_layers(model: LlamaForCausalLM, layers: int) -> LlamaForCausalLM:
    """A copy of ``model`` keeping its first ``layers`` decoder layers (own KV caches)."""
    if not 1 <= layers <= model.config.num_layers:
        raise ConfigError(
            f"a draft of the target's first layers needs 1..{model.config.num_layers} "
            f"layers, got {layers}"
        )
    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:layers]
    draft.config = replace(model.config, num_layers=layers)
    return draft
