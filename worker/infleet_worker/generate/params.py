"""Request bodies -> sampling parameters, checked once: unknown fields, wrong types and
out-of-range values are refused with a message naming them (HTTP 400)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infleet_worker.generate.sequence import SamplingParams


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# name -> (check, what the check wants): the sampling fields every API shares.
SAMPLING_FIELDS: dict[str, tuple[Any, str]] = {
    "max_tokens": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "temperature": (lambda v: _num(v) and 0 <= v <= 2, "a number in [0, 2]"),
    "top_p": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: _int(v) and v >= -1, "an integer >= -1 (-1 or 0 = off)"),
    "seed": (lambda v: _int(v) and -(2**63) <= v < 2**64, "an integer"),
    "stop": (
        lambda v: (
            v is None
            or (isinstance(v, str) and v != "")
            or (isinstance(v, list) and len(v) <= 16 and all(isinstance(s, str) and s for s in v))
        ),
        "a non-empty string or a list of at most 16 of them",
    ),
    "stop_token_ids": (
        lambda v: isinstance(v, list) and len(v) <= 64 and all(_int(t) and t >= 0 for t in v),
        "a list of at most 64 token ids",
    ),
    "ignore_eos": (lambda v: isinstance(v, bool), "a boolean"),
    "priority": (lambda v: _int(v) and v >= 1, "an integer >= 1 (1 is the highest)"),
    "timeout": (lambda v: _num(v) and v >= 0, "seconds >= 0 (0 = no queue timeout)"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
}
# Accepted with their neutral value only (the OpenAI client may send them).
NEUTRAL = {
    "n": 1,
    "best_of": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "echo": False,
    "logit_bias": {},
    "suffix": None,
    "user": None,
    "parallel_tool_calls": None,
    "tools": None,
    "tool_choice": None,
}


@dataclass
class Parsed:
    params: SamplingParams
    stream: bool
    requested_max_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


def check_fields(
    body: dict[str, Any], known: set[str], api_fields: dict[str, tuple[Any, str]]
) -> None:
    unknown = sorted(set(body) - known - set(SAMPLING_FIELDS) - set(NEUTRAL) - set(api_fields))
    if unknown:
        raise BadRequest(f"unknown parameters: {', '.join(unknown)}", unknown[0])
    for name, (ok, wants) in {**SAMPLING_FIELDS, **api_fields}.items():
        if name in body and body[name] is not None and not ok(body[name]):
            raise BadRequest(f"{name} must be {wants}, got {body[name]!r}", name)
    for name, neutral in NEUTRAL.items():
        value = body.get(name)
        if value is not None and value != neutral and not (name == "logit_bias" and not value):
            raise BadRequest(f"{name}={value!r} is not supported (only {neutral!r})", name)


def sampling_params(
    body: dict[str, Any],
    default_max_tokens: int,
    logprobs: int | None,
    priority_levels: int,
) -> Parsed:
    """Sampling parameters of an already field-checked body (OpenAI defaults)."""
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    priority = body.get("priority")
    if priority is not None and priority > priority_levels:
        raise BadRequest(f"priority must be <= {priority_levels} on this model", "priority")
    max_tokens = body.get("max_tokens")
    requested = default_max_tokens if max_tokens is None else int(max_tokens)
    top_k = body.get("top_k")
    params = SamplingParams(
        max_tokens=requested,
        temperature=float(1.0 if body.get("temperature") is None else body["temperature"]),
        top_k=max(0, int(top_k or 0)),
        top_p=float(1.0 if body.get("top_p") is None else body["top_p"]),
        seed=body.get("seed"),
        stop=stops,
        stop_token_ids=tuple(body.get("stop_token_ids") or ()),
        ignore_eos=bool(body.get("ignore_eos", False)),
        logprobs=logprobs,
        priority=priority,
        timeout_s=body.get("timeout"),
    )
    extra = {"stream_options": body.get("stream_options")}
    return Parsed(params, bool(body.get("stream", False)), requested, extra)


def clip_note(requested: int, prompt_len: int, max_model_len: int) -> str | None:
    """The warning when max_tokens is clipped to what the context leaves."""
    room = max_model_len - prompt_len
    if requested <= room:
        return None
    return (
        f"max_tokens {requested} clipped to {room}: the context is {max_model_len} tokens "
        f"and the prompt has {prompt_len}"
    )


def check_prompt(prompt_len: int, max_model_len: int) -> None:
    if prompt_len == 0:
        raise BadRequest("the prompt is empty", "prompt")
    if prompt_len >= max_model_len:
        raise BadRequest(
            f"the prompt has {prompt_len} tokens; this model's context is {max_model_len} "
            f"tokens, so a prompt may have at most {max_model_len - 1}",
            "prompt",
        )
