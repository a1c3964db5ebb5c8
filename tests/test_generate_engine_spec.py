"""The typed generation sections of the spec reach the engine: engine.kvCache,
engine.generation and engine.speculative override model.parameters (and refuse to
be set twice), the draft is loaded or cut from the target, model.task decides and is
checked against the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from generate_fixtures import drive, greedy
from infleet_worker.config import WorkerConfig
from infleet_worker.generate import wants_generation
from infleet_worker.generate.config import ConfigError
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.metrics import GenerateMetrics


def config(engine: dict[str, Any], **params: str) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "llama", "source": "builtin://llama", "parameters": params},
            "engine": {"device": "cpu", "warmup": False, **engine},
            "batching": {"maxBatchSize": 16},
        }
    )


def test_spec_sections_set_the_engine_options() -> None:
    core = build_core(
        config(
            {
                "kvCache": {"blockSize": 8, "prefixCaching": False, "blocks": 300},
                "generation": {
                    "maxContextTokens": 256,
                    "maxTokens": 5,
                    "maxRunningSequences": 3,
                    "maxBatchedTokens": 64,
                },
            },
            layers="1",
        )
    )
    o = core.opts
    assert (o.block_size, o.prefix_caching, o.kv_cache_blocks) == (8, False, 300)
    assert (o.max_model_len, o.max_num_seqs, o.max_num_batched_tokens) == (256, 3, 64)
    assert core.max_model_len == 256 and core.blocks.num_blocks == 300
    assert [len(t) for t in drive(core, [[1, 2, 3]], greedy(50))] == [5]  # maxTokens caps


def test_a_knob_in_both_parameters_and_spec_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.parameters.blockSize and engine.kvCache"):
        build_core(config({"kvCache": {"blockSize": 8}}, blockSize="16"))


def test_speculative_from_the_spec_keeps_greedy_output_and_counts() -> None:
    plain = drive(build_core(config({}, layers="2")), [[5, 6, 7]], greedy(24))
    registry = CollectorRegistry()
    cfg = config(
        {"speculative": {"targetLayers": 2, "numTokens": 3, "adaptive": False}}, layers="2"
    )
    core = build_core(cfg, GenerateMetrics("llama", "1", registry))
    assert core.speculative is not None
    assert drive(core, [[5, 6, 7]], greedy(24)) == plain
    labels = {"model": "llama", "version": "1"}
    assert registry.get_sample_value("infleet_generate_spec_acceptance_ratio", labels) == 1.0
    drafted = build_core(
        config({"speculative": {"source": "builtin://llama", "parameters": {"layers": "1"}}})
    )
    assert drive(drafted, [[5, 6, 7]], greedy(24)) == drive(
        build_core(config({})), [[5, 6, 7]], greedy(24)
    )


def test_a_draft_with_another_vocabulary_is_refused() -> None:
    cfg = config({"speculative": {"source": "builtin://llama", "parameters": {"vocab": "300"}}})
    with pytest.raises(ConfigError, match=r"engine\.speculative: the draft's vocabulary"):
        build_core(cfg)


def test_task_is_inferred_or_checked_against_the_source() -> None:
    assert wants_generation("builtin://llama", None)
    assert not wants_generation("builtin://mlp", None)
    assert wants_generation("builtin://llama", "generate")
    assert not wants_generation("builtin://mlp", "classify")
    with pytest.raises(ValueError, match=r"model\.task is generate but builtin://mlp"):
        wants_generation("builtin://mlp", "generate")
    with pytest.raises(ValueError, match=r"model\.task is embed but builtin://llama"):
        wants_generation("builtin://llama", "embed")


def test_on_a_gpu_the_drafts_cache_comes_out_of_the_same_budget() -> None:
    import torch

    from infleet_worker.generate.config import EngineOptions
    from infleet_worker.generate.draft import first_layers
    from infleet_worker.generate.engine_spec import share_kv_with_draft

    core = build_core(config({}, layers="4"))
    draft = first_layers(core.model, 1)
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert share_kv_with_draft(1000, EngineOptions(), core.model, draft, gpu) == 800
    assert share_kv_with_draft(1000, EngineOptions(), core.model, None, gpu) == 1000
    assert share_kv_with_draft(1000, EngineOptions(), core.model, draft, cpu) == 1000
    explicit = EngineOptions(kv_cache_blocks=1000)
    assert share_kv_with_draft(1000, explicit, core.model, draft, gpu) == 1000


def test_a_file_checkpoint_draft_for_a_checkpoint_target(tmp_path: Path) -> None:
    """Target and draft both saved by transformers (same vocabulary, the draft smaller):
    greedy output equals the target's alone."""
    from generate_fixtures import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path / "target", seed=0)
    save_tiny_checkpoint(tmp_path / "draft", seed=1, num_hidden_layers=1)

    def core_with(engine: dict[str, Any]) -> Any:
        cfg = WorkerConfig.model_validate(
            {
                "model": {"name": "t", "source": f"file://{tmp_path / 'target'}"},
                "engine": {"device": "cpu", "warmup": False, **engine},
            }
        )
        return build_core(cfg)

    plain = drive(core_with({}), [[5, 6, 7], [9] * 20], greedy(20))
    core = core_with({"speculative": {"source": f"file://{tmp_path / 'draft'}"}})
    assert core.speculative is not None and core.speculative.draft.config.num_layers == 1
    assert drive(core, [[5, 6, 7], [9] * 20], greedy(20)) == plain
