"""What a generative fleet's pods need from the operator (docs/operator.md,
"Generative models"): probes that never restart a worker in the middle of a long
prefill, and a termination grace period long enough for a draining worker to finish
the sequences it is generating (scale-down and rolling updates never cut a stream)."""

from __future__ import annotations

import math
from typing import Any

from infleet_operator import api
from infleet_worker.config import GENERATIVE_BUILTINS, ModelTask

# After SIGTERM: the preStop sleep, the worker's drain window, then the longest
# answer at the spec's per-token budget, plus this margin.
GRACE_MARGIN_SECONDS = 5
MAX_GRACE_SECONDS = 3600

# /v2/health/live answers from the event loop while the engine thread runs (torch
# releases the GIL) and a prompt is prefilled in chunks of engine.generation.
# maxBatchedTokens, so a step is short; these leave room for a slow, busy node: a
# minute without an answer before a restart, 5 s per probe.
LIVENESS = {"periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6}
READINESS = {"periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 3}


def generates(spec: api.InferenceDeploymentSpec) -> bool:
    """task generate, or no task and builtin://llama or a generation section set (a
    file:// checkpoint should say task: generate for the operator to know)."""
    if spec.model.task is not None:
        return spec.model.task == ModelTask.GENERATE
    e = spec.engine
    sections = (e.kv_cache, e.speculative, e.generation)
    return spec.model.source in GENERATIVE_BUILTINS or any(s is not None for s in sections)


def longest_answer_tokens(spec: api.InferenceDeploymentSpec) -> int | None:
    gen = spec.engine.generation
    if gen is None:
        return None
    return gen.max_tokens or gen.max_context_tokens


def grace_seconds(spec: api.InferenceDeploymentSpec, prestop: float, drain: float) -> int:
    """terminationGracePeriodSeconds: the spec's, raised for a generative fleet to
    preStop + drain + maxTokens x secondsPerToken + margin (at most an hour)."""
    base = spec.termination_grace_period_seconds
    tokens = longest_answer_tokens(spec)
    if not generates(spec) or tokens is None or spec.engine.generation is None:
        return base
    per_token = spec.engine.generation.seconds_per_token
    need = prestop + drain + tokens * per_token + GRACE_MARGIN_SECONDS
    return min(MAX_GRACE_SECONDS, max(base, math.ceil(need)))


def probe_overrides(spec: api.InferenceDeploymentSpec) -> dict[str, dict[str, Any]]:
    """Fields merged into the worker container's probes (none for single-pass models)."""
    if not generates(spec):
        return {}
    return {"livenessProbe": dict(LIVENESS), "readinessProbe": dict(READINESS)}
