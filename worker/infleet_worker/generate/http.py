"""The generation worker's HTTP app: OpenAI and Triton generate routes, plus the v2
health and metadata routes Kubernetes probes and tritonclient's readiness calls use.

Errors answer JSON: OpenAI's ``{"error": {"message", "type", "param", "code"}}``
under /v1, Triton's ``{"error": "..."}`` elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from infleet_worker.generate.frontend import EngineFailed, Frontend, Unavailable
from infleet_worker.generate.openai_api import OpenAIRoutes
from infleet_worker.generate.params import BadRequest
from infleet_worker.generate.triton_api import TritonGenerateRoutes

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 503: "unavailable"}


def _error(
    request: web.Request, status: int, message: str, param: str | None = None
) -> web.Response:
    if request.path.startswith("/v1/"):
        kind = ERROR_TYPES.get(status, "server_error")
        doc = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        return web.json_response(doc, status=status)
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        return _error(request, 400, e.message, e.param)
    except Unavailable as e:
        return _error(request, 503, str(e))
    except EngineFailed as e:
        return _error(request, 500, str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(request, e.status, e.text or e.reason)
    except (ConnectionResetError, asyncio.CancelledError):
        raise  # the client went away: nothing to answer
    except Exception as e:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(request, 500, f"internal error: {e}")


def build_app(fe: Frontend, max_request_bytes: int) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=max_request_bytes)
    r = app.router
    OpenAIRoutes(fe).add_to(r)
    TritonGenerateRoutes(fe).add_to(r)
    V2Routes(fe).add_to(r)
    return app


class V2Routes:
    def __init__(self, fe: Frontend) -> None:
        self.fe = fe

    def add_to(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(prefix, self.model_metadata)
            r.add_get(prefix + "/ready", self.model_ready)
            r.add_get(prefix + "/config", self.model_config)

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.fe.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "infleet", "version": "0.1.0", "extensions": ["generate", "openai"]}
        )

    def _check(self, request: web.Request) -> None:
        m, v = request.match_info["model"], request.match_info.get("version")
        if m != self.fe.model or (v and v != self.fe.version):
            raise web.HTTPBadRequest(text=f"unknown model {m}{'/' + v if v else ''}")

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.json_response(
            {
                "name": self.fe.model,
                "versions": [self.fe.version],
                "platform": "infleet_generate",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
            }
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        m, v = request.match_info["model"], request.match_info.get("version")
        ok = self.fe.ready and m == self.fe.model and (not v or v == self.fe.version)
        return web.Response(status=200 if ok else 400)

    async def model_config(self, request: web.Request) -> web.Response:
        self._check(request)
        core = self.fe.engine.core
        return web.json_response(
            {
                "name": self.fe.model,
                "backend": "infleet_generate",
                "max_batch_size": core.opts.max_num_seqs,
                "model_transaction_policy": {"decoupled": True},
                "parameters": {
                    "max_model_len": core.max_model_len,
                    "block_size": core.opts.block_size,
                    "kv_blocks": core.blocks.num_blocks,
                    "prefix_caching": core.opts.prefix_caching,
                },
            }
        )
