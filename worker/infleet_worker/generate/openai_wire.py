"""OpenAI wire format: request field checks, messages, choices, logprobs, usage, SSE."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from infleet_worker.generate.params import BadRequest, Parsed
from infleet_worker.generate.sequence import TokenOutput

Decode = Callable[[list[int]], str]

COMPLETION_FIELDS: dict[str, tuple[Any, str]] = {
    "logprobs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 5, "0-5"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
}
CHAT_FIELDS: dict[str, tuple[Any, str]] = {
    "logprobs": (lambda v: isinstance(v, bool), "a boolean"),
    "top_logprobs": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 20,
        "an integer in [0, 20]",
    ),
    "max_completion_tokens": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "an integer >= 1",
    ),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
    "response_format": (
        lambda v: isinstance(v, dict) and v.get("type") == "text",
        '{"type": "text"} (structured output is not supported)',
    ),
}


def chunk_prefix(head: dict[str, Any]) -> bytes:
    """``data: {<head fields>,"choices":[`` for chunks that differ only in their choice."""
    return b"data: " + json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"choices":['


def chunk(prefix: bytes, choice: dict[str, Any]) -> bytes:
    return prefix + json.dumps(choice, separators=(",", ":")).encode() + b"]}\n\n"


def sse(doc: Any) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def choice(outs: list[TokenOutput], p: Parsed, chat: bool, decode: Decode) -> dict[str, Any]:
    text = "".join(o.text for o in outs)
    reason = outs[-1].finish_reason
    if chat:
        msg = {"role": "assistant", "content": text}
        lp = chat_logprobs(outs, p, decode)
        return {"index": 0, "message": msg, "finish_reason": reason, "logprobs": lp}
    lp = completion_logprobs(outs, p, decode)
    return {"index": 0, "text": text, "finish_reason": reason, "logprobs": lp}


def delta(out: TokenOutput, p: Parsed, chat: bool, decode: Decode) -> dict[str, Any]:
    reason = out.finish_reason
    if chat:
        d = {"content": out.text} if out.text else {}
        lp = chat_logprobs([out], p, decode)
        return {"index": 0, "delta": d, "finish_reason": reason, "logprobs": lp}
    lp = completion_logprobs([out], p, decode)
    return {"index": 0, "text": out.text, "finish_reason": reason, "logprobs": lp}


def completion_logprobs(
    outs: list[TokenOutput], p: Parsed, decode: Decode
) -> dict[str, Any] | None:
    if p.params.logprobs is None:
        return None
    toks = [o for o in outs if o.token_id is not None]
    return {
        "tokens": [decode([o.token_id]) for o in toks if o.token_id is not None],
        "token_logprobs": [o.logprob for o in toks],
        "top_logprobs": [{decode([t]): v for t, v in (o.top_logprobs or {}).items()} for o in toks],
        "text_offset": [],
    }


def chat_logprobs(outs: list[TokenOutput], p: Parsed, decode: Decode) -> dict[str, Any] | None:
    if p.params.logprobs is None:
        return None

    def entry(token: str, logprob: float | None) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = [
        {
            **entry(decode([o.token_id]), o.logprob),
            "top_logprobs": [entry(decode([t]), v) for t, v in (o.top_logprobs or {}).items()],
        }
        for o in outs
        if o.token_id is not None
    ]
    return {"content": content}


def usage(prompt: int, outs: list[TokenOutput]) -> dict[str, int]:
    done = sum(1 for o in outs if o.token_id is not None)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def token_list(v: Any) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
    )


def messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a role", "messages")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            if not all(isinstance(c, dict) and c.get("type") == "text" for c in content):
                raise BadRequest(
                    f"messages[{i}]: only text content parts are supported", "messages"
                )
            content = "".join(str(c.get("text", "")) for c in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string", "messages")
        out.append({"role": m["role"], "content": content})
    return out


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
