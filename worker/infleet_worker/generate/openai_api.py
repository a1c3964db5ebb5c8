"""OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions`` (``stream: true`` as
server-sent events) and ``/v1/models``; the ``openai`` Python client works unmodified.

Extensions beside OpenAI's fields: top_k, stop_token_ids, ignore_eos, priority,
timeout. A clipped max_tokens is reported in ``warnings`` (and the
``X-Infleet-Warning`` header).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

from aiohttp import web

from infleet_worker.generate.frontend import Frontend
from infleet_worker.generate.params import (
    BadRequest,
    Parsed,
    check_fields,
    clip_note,
    sampling_params,
)
from infleet_worker.generate.sequence import TokenOutput

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


def sse(doc: Any) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


class OpenAIRoutes:
    def __init__(self, fe: Frontend) -> None:
        self.fe = fe

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self.models)
        router.add_post("/v1/completions", self.completions)
        router.add_post("/v1/chat/completions", self.chat)

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.fe.model, "object": "model", "created": 0, "owned_by": "infleet"}
        card["max_model_len"] = self.fe.max_model_len
        return web.json_response({"object": "list", "data": [card]})

    def _check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if name is not None and name != self.fe.model:
            raise BadRequest(
                f"unknown model {name!r}; this worker serves {self.fe.model!r}", "model"
            )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        check_fields(body, {"model", "prompt"}, COMPLETION_FIELDS)
        self._check_model(body)
        prompt: Any = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if not (isinstance(prompt, str) or _token_list(prompt)):
            raise BadRequest(
                "prompt must be a string or a list of token ids (one prompt)", "prompt"
            )
        ids = self.fe.encode(prompt)
        parsed = sampling_params(
            body, self.fe.default_max_tokens, body.get("logprobs"), self.fe.priority_levels
        )
        return await self._respond(request, body, ids, parsed, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        check_fields(body, {"model", "messages"}, CHAT_FIELDS)
        self._check_model(body)
        messages = _messages(body.get("messages"))
        if body.get("max_completion_tokens") is not None:
            body.setdefault("max_tokens", body["max_completion_tokens"])
        text, add_special = self.fe.tokenizer.chat_prompt(messages)
        ids = self.fe.encode(text, add_special)
        logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        parsed = sampling_params(
            body, self.fe.default_max_tokens, logprobs, self.fe.priority_levels
        )
        return await self._respond(request, body, ids, parsed, chat=True)

    async def _respond(
        self, request: web.Request, body: dict[str, Any], ids: list[int], p: Parsed, chat: bool
    ) -> web.StreamResponse:
        note = clip_note(p.requested_max_tokens, len(ids), self.fe.max_model_len)
        kind = "chat.completion" if chat else "text_completion"
        head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": kind,
            "created": int(time.time()),
            "model": self.fe.model,
        }
        headers = {"X-Infleet-Warning": note} if note else {}
        with self.fe.request() as outcome:
            async with contextlib.aclosing(self.fe.stream(ids, p.params, outcome)) as stream:
                return await self._answer(request, head, ids, p, chat, stream, headers, note)

    async def _answer(
        self,
        request: web.Request,
        head: dict[str, Any],
        ids: list[int],
        p: Parsed,
        chat: bool,
        stream: Any,
        headers: dict[str, str],
        note: str | None,
    ) -> web.StreamResponse:
        first = await anext(stream)  # errors before the first token get a status
        if p.stream:
            return await self._stream(request, head, ids, p, chat, first, stream, headers)
        outs = [first]
        if first.finish_reason is None:
            outs.extend([o async for o in stream])
        doc = {**head, "choices": [self._choice(outs, p, chat)]}
        doc["usage"] = _usage(len(ids), outs)
        if note:
            doc["warnings"] = [note]
        return web.json_response(doc, headers=headers)

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        ids: list[int],
        p: Parsed,
        chat: bool,
        first: TokenOutput,
        rest: Any,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
        )
        await resp.prepare(request)
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
        outs = [first]
        if chat:
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            await resp.write(sse({**head, "choices": [{**role, "finish_reason": None}]}))
        await resp.write(sse({**head, "choices": [self._delta(first, p, chat)]}))
        if first.finish_reason is None:
            async for out in rest:
                outs.append(out)
                await resp.write(sse({**head, "choices": [self._delta(out, p, chat)]}))
        opts = p.extra.get("stream_options") or {}
        if opts.get("include_usage"):
            await resp.write(sse({**head, "choices": [], "usage": _usage(len(ids), outs)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _choice(self, outs: list[TokenOutput], p: Parsed, chat: bool) -> dict[str, Any]:
        text = "".join(o.text for o in outs)
        reason = outs[-1].finish_reason
        if chat:
            msg = {"role": "assistant", "content": text}
            return {
                "index": 0,
                "message": msg,
                "finish_reason": reason,
                "logprobs": self._chat_lp(outs, p),
            }
        return {"index": 0, "text": text, "finish_reason": reason, "logprobs": self._lp(outs, p)}

    def _delta(self, out: TokenOutput, p: Parsed, chat: bool) -> dict[str, Any]:
        if chat:
            delta = {"content": out.text} if out.text else {}
            lp = self._chat_lp([out], p)
            return {"index": 0, "delta": delta, "finish_reason": out.finish_reason, "logprobs": lp}
        return {
            "index": 0,
            "text": out.text,
            "finish_reason": out.finish_reason,
            "logprobs": self._lp([out], p),
        }

    def _token(self, token_id: int) -> str:
        return self.fe.tokenizer.decode([token_id])

    def _lp(self, outs: list[TokenOutput], p: Parsed) -> dict[str, Any] | None:
        if p.params.logprobs is None:
            return None
        outs = [o for o in outs if o.token_id is not None]
        return {
            "tokens": [self._token(o.token_id) for o in outs if o.token_id is not None],
            "token_logprobs": [o.logprob for o in outs],
            "top_logprobs": [
                {self._token(t): v for t, v in (o.top_logprobs or {}).items()} for o in outs
            ],
            "text_offset": [],
        }

    def _chat_lp(self, outs: list[TokenOutput], p: Parsed) -> dict[str, Any] | None:
        if p.params.logprobs is None:
            return None
        content = []
        for o in outs:
            if o.token_id is None:
                continue
            tops = [
                {"token": self._token(t), "logprob": v, "bytes": list(self._token(t).encode())}
                for t, v in (o.top_logprobs or {}).items()
            ]
            tok = self._token(o.token_id)
            content.append(
                {
                    "token": tok,
                    "logprob": o.logprob,
                    "bytes": list(tok.encode()),
                    "top_logprobs": tops,
                }
            )
        return {"content": content}


def _usage(prompt: int, outs: list[TokenOutput]) -> dict[str, int]:
    done = sum(1 for o in outs if o.token_id is not None)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _token_list(v: Any) -> bool:
    return (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
    )


def _messages(raw: Any) -> list[dict[str, str]]:
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
