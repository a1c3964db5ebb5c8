"""A generative manifest -> the control loop the operator would run and the simulated fleet.

The engine's limits come from the spec as the worker reads them
(``engine.generation.maxRunningSequences``, else ``batching.maxBatchSize``;
``maxBatchedTokens``; ``batching.defaultTimeoutMicroseconds``), KV capacity from
``engine.kvCache.blocks`` x ``blockSize`` when set, else from the measured profile.
Per-request prompt and output lengths come from the trace, else from
``--prompt-tokens`` / ``--output-tokens``, else 128 prompt tokens and
``generation.maxTokens`` (or 128) output tokens.
"""

from __future__ import annotations

import math
from dataclasses import replace

from infleet_operator.api import InferenceDeploymentSpec
from infleet_operator.autoscaling.spec import ControlLoop, loop_settings, token_signal
from infleet_operator.autoscaling.tokens import TokenSignal
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.gen_fleet import GenFleetConfig
from infleet_operator.simulator.gen_profile import GenerateProfile
from infleet_operator.simulator.gen_replica import EngineLimits
from infleet_operator.simulator.profile import Profile

DEFAULT_PROMPT_TOKENS = 128
DEFAULT_OUTPUT_TOKENS = 128


def engine_profile(spec: InferenceDeploymentSpec, profile: Profile) -> GenerateProfile:
    """The profile's step times with the spec's KV cache, where the spec sizes it."""
    gen = profile.generate or GenerateProfile()
    kv = spec.engine.kv_cache
    if kv is None:
        return gen
    if kv.blocks is not None:
        return replace(gen, kv_capacity_tokens=kv.blocks * kv.block_size, block_size=kv.block_size)
    blocks = gen.kv_capacity_tokens // gen.block_size  # measured pool, the spec's block size
    return replace(gen, kv_capacity_tokens=blocks * gen.block_size, block_size=kv.block_size)


def engine_limits(spec: InferenceDeploymentSpec) -> EngineLimits:
    gen, b = spec.engine.generation, spec.batching
    timeout = b.default_timeout_microseconds / 1e6
    running = b.max_batch_size
    if gen is not None and gen.max_running_sequences is not None:
        running = gen.max_running_sequences
    return EngineLimits(
        max_running=running,
        max_batched_tokens=gen.max_batched_tokens if gen is not None else 512,
        queue_timeout_s=timeout if timeout > 0 else math.inf,
    )


def default_lengths(
    spec: InferenceDeploymentSpec, prompt: int | None, output: int | None
) -> tuple[int, int]:
    gen = spec.engine.generation
    max_tokens = gen.max_tokens if gen is not None else None
    return prompt or DEFAULT_PROMPT_TOKENS, output or max_tokens or DEFAULT_OUTPUT_TOKENS


def setup_generation(
    spec: InferenceDeploymentSpec,
    profile: Profile,
    base: FleetConfig,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
) -> tuple[ControlLoop, GenFleetConfig]:
    """What the operator runs for this generative fleet, and the fleet it scales."""
    tokens = token_signal(spec) or TokenSignal()
    settings = loop_settings(spec.autoscaling, profile.pod_start_seconds, tokens)
    prompt, output = default_lengths(spec, prompt_tokens, output_tokens)
    cfg = GenFleetConfig(
        profile=engine_profile(spec, profile),
        limits=engine_limits(spec),
        prompt_tokens=prompt,
        output_tokens=output,
        tokens=tokens,
        lb=base.lb,
        start_delay_s=profile.pod_start_seconds,
        start_jitter=base.start_jitter,
        tick_s=settings.decision_period_s,
        scrape_interval_s=settings.scrape_interval_s,
        scrape_at_tick=settings.scrape_at_decision,
        initial_replicas=base.initial_replicas or spec.autoscaling.min_replicas,
        seed=base.seed,
    )
    return ControlLoop(settings), cfg
