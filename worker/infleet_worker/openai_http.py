"""OpenAI-compatible routes for non-generative models: ``POST /v1/embeddings`` and
``GET /v1/models`` (the OpenAI client works unmodified; docs/worker.md).

Registered by ``HttpFrontend`` beside the v2 routes. Every row goes through
``InferenceService.infer`` (validation, cache, batcher), split into requests of at most
the model's max batch size that run concurrently. Errors answer in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the v2 status of the failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import web

from infleet_worker.openai_embeddings import (
    EmbeddingModel,
    TokenCounter,
    build_request,
    count_tokens,
    encode_vector,
    minilm_token_counter,
    parse_dimensions,
    parse_input,
    truncate,
)
from infleet_worker.protocol.errors import ErrorKind, InferError, invalid
from infleet_worker.service import InferenceService
from infleet_worker.tensors import InferRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ERROR_TYPES = {
    ErrorKind.INVALID: ("invalid_request_error", None),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    ErrorKind.TOO_LARGE: ("invalid_request_error", "request_too_large"),
}


def error_response(e: InferError, param: str | None = None) -> web.Response:
    kind, code = ERROR_TYPES.get(e.kind, ("server_error", e.kind.value))
    status = 404 if e.kind is ErrorKind.NOT_FOUND else e.http_status
    body = {"error": {"message": e.message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def openai_errors(handler: Handler) -> Handler:
    """InferError -> OpenAI's error shape (the v2 middleware never sees it)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except InferError as e:
            return error_response(e, "model" if e.kind is ErrorKind.NOT_FOUND else None)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            kind = ErrorKind.TOO_LARGE if e.status == 413 else ErrorKind.INVALID
            return error_response(InferError(kind, e.text or e.reason))

    return wrapped


class OpenAIRoutes:
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.created = int(time.time())
        self._counter: TokenCounter | None = None
        self._counter_loaded = False

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", openai_errors(self.models))
        router.add_get("/v1/models/{model}", openai_errors(self.model))
        router.add_post("/v1/embeddings", openai_errors(self.embeddings))

    def _card(self) -> dict[str, Any]:
        return {
            "id": self.service.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "infleet",
        }

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._card()]})

    async def model(self, request: web.Request) -> web.Response:
        self._check_model(request.match_info["model"])
        return web.json_response(self._card())

    def _check_model(self, name: Any) -> None:
        svc = self.service
        if name != svc.model_name:
            raise InferError(
                ErrorKind.NOT_FOUND,
                f"The model '{name}' does not exist; this worker serves '{svc.model_name}'",
            )

    def _tokens(self) -> TokenCounter | None:
        cfg = self.service.cfg
        if not self._counter_loaded and cfg.model.source == "builtin://minilm":
            max_len = int(cfg.model.parameters.get("maxSeqLength", "256"))
            self._counter = minilm_token_counter(max_len)
        self._counter_loaded = True
        return self._counter

    async def embeddings(self, request: web.Request) -> web.Response:
        svc = self.service
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            raise invalid(f"the request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        if "model" not in body:
            raise invalid("'model' is required")
        self._check_model(body["model"])
        if "input" not in body:
            raise invalid("'input' is required")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise invalid("'encoding_format' must be 'float' or 'base64'")
        if svc.signature is None:
            raise InferError(ErrorKind.UNAVAILABLE, "the model is still loading; retry")
        model = EmbeddingModel.of(svc.signature)
        items = parse_input(body["input"])
        dims = parse_dimensions(body.get("dimensions"), model.size)
        step = max(1, svc.max_batch_size)
        chunks = [items[i : i + step] for i in range(0, len(items), step)]
        requests = [build_request(model, svc.model_name, svc.model_version, c) for c in chunks]
        vectors = np.concatenate(await asyncio.gather(*(self._run(r, model) for r in requests)))
        vectors = truncate(vectors, dims)
        tokens = sum(count_tokens(items, self._tokens()))
        data = [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, fmt)}
            for i, v in enumerate(vectors)
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": svc.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _run(self, request: InferRequest, model: EmbeddingModel) -> np.ndarray:
        request.requested_outputs = [model.output.name]
        result = await self.service.infer(request)
        try:
            out: np.ndarray = np.array(result.outputs[model.output.name].array, np.float32)
        finally:
            result.done()
        return out


def register(router: web.UrlDispatcher, service: InferenceService) -> None:
    OpenAIRoutes(service).register(router)
