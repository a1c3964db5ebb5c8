"""OpenAI-compatible ``/v1/completions``, ``/v1/chat/completions`` (``stream: true`` as
server-sent events) and ``/v1/models``; the ``openai`` Python client works unmodified.

Extensions beside OpenAI's fields: top_k, stop_token_ids, ignore_eos, priority,
timeout. A clipped max_tokens is reported in ``warnings`` (and the
``X-Infleet-Warning`` header).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from aiohttp import web

from infleet_worker.generate.frontend import Frontend
from infleet_worker.generate.openai_wire import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    choice,
    chunk,
    chunk_prefix,
    delta,
    messages,
    read_json,
    sse,
    token_list,
    usage,
)
from infleet_worker.generate.params import (
    BadRequest,
    Parsed,
    check_fields,
    clip_note,
    sampling_params,
)
from infleet_worker.generate.sequence import TokenOutput


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
        if not (isinstance(prompt, str) or token_list(prompt)):
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
        msgs = messages(body.get("messages"))
        if body.get("max_completion_tokens") is not None:
            body.setdefault("max_tokens", body["max_completion_tokens"])
        try:
            text, add_special = self.fe.tokenizer.chat_prompt(msgs)
        except Exception as e:  # the checkpoint's template refused the messages
            raise BadRequest(f"cannot apply the chat template: {e}", "messages") from None
        ids = self.fe.encode(text, add_special)
        logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        parsed = sampling_params(
            body, self.fe.max_model_len - len(ids), logprobs, self.fe.priority_levels
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
        doc = {**head, "choices": [choice(outs, p, chat, self.fe.tokenizer.decode)]}
        doc["usage"] = usage(len(ids), outs)
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
        prefix = chunk_prefix(head)  # the fields every chunk repeats, encoded once
        decode = self.fe.tokenizer.decode
        outs = [first]
        if chat:
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            await resp.write(chunk(prefix, {**role, "finish_reason": None}))
        await resp.write(chunk(prefix, delta(first, p, chat, decode)))
        if first.finish_reason is None:
            async for out in rest:
                outs.append(out)
                await resp.write(chunk(prefix, delta(out, p, chat, decode)))
        opts = p.extra.get("stream_options") or {}
        if opts.get("include_usage"):
            await resp.write(sse({**head, "choices": [], "usage": usage(len(ids), outs)}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
