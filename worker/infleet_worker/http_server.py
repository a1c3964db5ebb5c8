"""KServe v2 REST front end (aiohttp), Triton-compatible (tritonclient.http works)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from infleet_worker import openai_http
from infleet_worker.protocol.errors import ErrorKind, InferError, invalid
from infleet_worker.protocol.http_codec import decode_request, decompress, encode_response
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.http")

HEADER_LENGTH = "Inference-Header-Content-Length"
_JSON = "application/json"


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(), status=status, content_type=_JSON
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers JSON {"error": ...} with a 4xx/5xx status; nothing escapes."""
    try:
        return await handler(request)
    except InferError as e:
        return _error(e.message, e.http_status)
    except web.HTTPRequestEntityTooLarge as e:
        return _error(f"request body too large: {e.text}", 413)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.reason if not e.text else e.text, e.status)
    except Exception as e:  # a bug: answer, log, keep serving
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(f"internal error: {e}", 500)


class HttpFrontend:
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.max_request_bytes = service.cfg.server.max_request_bytes
        self.app = web.Application(middlewares=[_errors], client_max_size=self.max_request_bytes)
        r = self.app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/models/stats", self.all_stats)
        r.add_post("/v2/repository/index", self.repository_index)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(prefix, self.model_metadata)
            r.add_get(prefix + "/ready", self.model_ready)
            r.add_get(prefix + "/config", self.model_config)
            r.add_get(prefix + "/stats", self.model_stats)
            r.add_post(prefix + "/infer", self.infer)
        openai_http.register(r, service)  # /v1/embeddings, /v1/models

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.service.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json(self.service.server_metadata())

    def _model(self, request: web.Request) -> tuple[str, str]:
        m, v = request.match_info["model"], request.match_info.get("version", "")
        self.service.check_model(m, v)
        return m, v

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._model(request)
        return _json(self.service.model_metadata())

    async def model_ready(self, request: web.Request) -> web.Response:
        m, v = request.match_info["model"], request.match_info.get("version", "")
        return web.Response(status=200 if self.service.model_ready(m, v) else 400)

    async def model_config(self, request: web.Request) -> web.Response:
        self._model(request)
        return _json(self.service.model_config())

    async def model_stats(self, request: web.Request) -> web.Response:
        m, v = self._model(request)
        return _json(await self.service.model_statistics(m, v))

    async def all_stats(self, request: web.Request) -> web.Response:
        return _json(await self.service.model_statistics())

    async def repository_index(self, request: web.Request) -> web.Response:
        return _json(self.service.repository_index())

    async def infer(self, request: web.Request) -> web.Response:
        m = request.match_info["model"]
        v = request.match_info.get("version", "")
        if request.content_length is not None and request.content_length > self.max_request_bytes:
            raise InferError(
                ErrorKind.TOO_LARGE,
                f"request body of {request.content_length} bytes exceeds the limit of "
                f"{self.max_request_bytes} bytes",
            )
        self.service.check_model(m, v)
        try:
            body = await request.read()
        except RequestPayloadError as e:
            raise invalid(f"cannot read the request body: {e}".replace("\n", " ")) from None
        out, content_type, hlen = await self.infer_body(
            m, v, body, request.headers.get("Content-Encoding"), request.headers.get(HEADER_LENGTH)
        )
        headers = None if hlen is None else {HEADER_LENGTH: str(hlen)}
        return web.Response(body=out, content_type=content_type, headers=headers)

    async def infer_body(
        self, m: str, v: str, body: bytes, encoding: str | None, raw_len: str | None
    ) -> tuple[bytes, str, int | None]:
        """One inference from its body and two headers, whichever transport read them:
        (response body, content type, Inference-Header-Content-Length or None)."""
        svc = self.service
        svc.check_model(m, v)
        # The runner has auto_decompress off (aiohttp's own inflater can leave a broken
        # stream unanswered): inflate here, bounded by max_request_bytes.
        if encoding:
            body = decompress(body, encoding, self.max_request_bytes)
        header_length: int | None = None
        if raw_len is not None:
            try:
                header_length = int(raw_len)
            except ValueError:
                raise invalid(f"{HEADER_LENGTH} must be an integer, got {raw_len!r}") from None
        req, plan = decode_request(body, header_length, m, v or svc.model_version)
        result = await svc.infer(req)
        try:
            out, hlen = encode_response(result, req, plan)
        finally:
            result.done()
        return out, (_JSON if hlen is None else "application/octet-stream"), hlen
