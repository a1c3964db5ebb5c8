"""Triton's generate extension: ``POST /v2/models/{m}[/versions/{v}]/generate`` (one JSON
answer) and ``.../generate_stream`` (server-sent events, one per token).

Body: ``{"text_input": "...", "parameters": {"max_tokens": 32, ...}}``; the sampling
fields may also sit at the top level, as Triton's TensorRT-LLM backend takes them.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from infleet_worker.generate.frontend import Frontend
from infleet_worker.generate.openai_wire import read_json, sse
from infleet_worker.generate.params import BadRequest, check_fields, clip_note, sampling_params

TRITON_FIELDS: dict[str, tuple[Any, str]] = {
    "stop_words": (lambda v: isinstance(v, str | list), "a string or a list of strings"),
    "bad_words": (lambda v: v in ("", [], None), "empty (bad words are not supported)"),
    "return_logprobs": (lambda v: isinstance(v, bool), "a boolean"),
}


class TritonGenerateRoutes:
    def __init__(self, fe: Frontend) -> None:
        self.fe = fe

    def add_to(self, router: web.UrlDispatcher) -> None:
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            router.add_post(prefix + "/generate", self.generate)
            router.add_post(prefix + "/generate_stream", self.generate_stream)

    def _parse(
        self, request: web.Request, body: dict[str, Any]
    ) -> tuple[list[int], Any, str | None]:
        m, v = request.match_info["model"], request.match_info.get("version")
        if m != self.fe.model or (v and v != self.fe.version):
            raise web.HTTPNotFound(text=f"unknown model {m}{'/' + v if v else ''}")
        params = body.pop("parameters", None) or {}
        if not isinstance(params, dict):
            raise BadRequest("parameters must be an object", "parameters")
        merged = {**body, **params}
        check_fields(merged, {"text_input", "id"}, TRITON_FIELDS)
        text = merged.get("text_input")
        if not isinstance(text, str):
            raise BadRequest("text_input must be a string", "text_input")
        stop_words = merged.pop("stop_words", None)
        if stop_words and not merged.get("stop"):
            merged["stop"] = [stop_words] if isinstance(stop_words, str) else stop_words
        ids = self.fe.encode(text)
        logprobs = 0 if merged.get("return_logprobs") else None
        parsed = sampling_params(
            merged, self.fe.default_max_tokens, logprobs, self.fe.priority_levels
        )
        note = clip_note(parsed.requested_max_tokens, len(ids), self.fe.max_model_len)
        return ids, parsed, note

    def _doc(self, text: str, reason: str | None, note: str | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "model_name": self.fe.model,
            "model_version": self.fe.version,
            "text_output": text,
        }
        if reason is not None:
            doc["finish_reason"] = reason
        if note:
            doc["warnings"] = [note]
        return doc

    async def generate(self, request: web.Request) -> web.Response:
        ids, parsed, note = self._parse(request, await read_json(request))
        with self.fe.request() as outcome:
            async with contextlib.aclosing(self.fe.stream(ids, parsed.params, outcome)) as stream:
                outs = [o async for o in stream]
        doc = self._doc("".join(o.text for o in outs), outs[-1].finish_reason, note)
        if parsed.params.logprobs is not None:
            doc["logprobs"] = [o.logprob for o in outs if o.token_id is not None]
        return web.json_response(doc)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        ids, parsed, note = self._parse(request, await read_json(request))
        with self.fe.request() as outcome:
            async with contextlib.aclosing(self.fe.stream(ids, parsed.params, outcome)) as stream:
                return await self._write_stream(request, stream, note)

    async def _write_stream(
        self, request: web.Request, stream: Any, note: str | None
    ) -> web.StreamResponse:
        first = await anext(stream)
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        await resp.write(sse(self._doc(first.text, first.finish_reason, note)))
        if first.finish_reason is None:
            async for out in stream:
                await resp.write(sse(self._doc(out.text, out.finish_reason, None)))
        await resp.write_eof()
        return resp
