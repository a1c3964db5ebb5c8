"""The request path, independent of HTTP or gRPC.

decode (protocol layer) -> validate -> cache lookup -> batcher -> engine thread
-> split -> cache complete -> encode (protocol layer). The service owns the
engine thread, the batcher, the statistics and the readiness / drain state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from infleet_worker.batcher import BatchTiming, DynamicBatcher
from infleet_worker.cache.base import CacheLookup, ResultCache
from infleet_worker.config import WorkerConfig
from infleet_worker.domains import check_inputs, domain_metadata, domain_parameters
from infleet_worker.engine.base import Engine, TensorInfo
from infleet_worker.metrics import Metrics
from infleet_worker.protocol.datatypes import CONFIG_TYPES
from infleet_worker.protocol.errors import ErrorKind, InferError, invalid, not_found, unavailable
from infleet_worker.stats import ModelStats
from infleet_worker.tensors import InferRequest, InferResult, Tensor

log = logging.getLogger("infleet_worker.service")

SERVER_NAME = "infleet"
SERVER_VERSION = "0.1.0"
# Only what is really implemented.
EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "statistics",
    "schedule_policy",
    "parameters",
]
PLATFORM = "pytorch_libtorch"
BACKEND = "pytorch"


class InferenceService:
    """One model behind a dynamic batcher; shared by the HTTP and gRPC front ends."""

    def __init__(
        self,
        cfg: WorkerConfig,
        engine: Engine,
        cache: ResultCache | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.cache = cache
        self.model_name = cfg.model.name
        self.model_version = cfg.model.version
        self.metrics = metrics or Metrics(self.model_name, self.model_version)
        self.stats = ModelStats(self.model_name, self.model_version)
        b = cfg.batching
        self.max_batch_size = b.max_batch_size
        if engine.max_batch_size > 0:
            self.max_batch_size = min(self.max_batch_size, engine.max_batch_size)
        self.inputs: dict[str, TensorInfo] = {i.name: i for i in engine.inputs}
        self.outputs: dict[str, TensorInfo] = {o.name: o for o in engine.outputs}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infleet-engine")
        self.batcher = DynamicBatcher(
            engine,
            self.executor,
            max_batch_size=self.max_batch_size,
            max_queue_delay_us=b.max_queue_delay_microseconds,
            max_queue_size=b.max_queue_size,
            priority_levels=b.priority_levels,
            default_priority_level=b.default_priority_level,
            default_timeout_us=b.default_timeout_microseconds,
            on_batch=self._on_batch,
        )
        self.ready = False  # engine warmed up and not draining
        self.accepting = True  # takes new inference requests
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics.bind(lambda: self.batcher.queue_depth, lambda: self.inflight)
        self.metrics.ready.set(0)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self, warmup: bool = True) -> None:
        """Warm the engine up on its own thread, start the batcher, become Ready."""
        if warmup:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.warmup)
        self.batcher.start()
        self.set_ready(True)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def stop_accepting(self) -> None:
        self.accepting = False
        self.set_ready(False)

    async def wait_idle(self) -> None:
        """Until every accepted request has its answer."""
        while self.inflight:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        self.set_ready(False)
        self.accepting = False
        await self.batcher.stop()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.engine.close)
        except Exception:
            log.exception("engine close failed")
        self.executor.shutdown(wait=False)
        if self.cache is not None:
            try:
                await self.cache.close()
            except Exception:
                log.exception("cache close failed")

    # -- models ---------------------------------------------------------------------
    def check_model(self, name: str, version: str = "") -> None:
        if name != self.model_name:
            raise not_found(f"unknown model '{name}'; this worker serves '{self.model_name}'")
        if version and version != self.model_version:
            raise not_found(
                f"unknown version '{version}' of model '{name}'; available: '{self.model_version}'"
            )

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.check_model(name, version)
        except InferError:
            return False
        return self.ready

    # -- inference --------------------------------------------------------------------
    def validate(self, req: InferRequest) -> None:
        inputs = req.inputs
        for name in inputs:
            if name not in self.inputs:
                raise invalid(
                    f"unexpected input '{name}' for model '{self.model_name}'; expected "
                    f"{sorted(self.inputs)}"
                )
        batch = -1
        for name, info in self.inputs.items():
            t = inputs.get(name)
            if t is None:
                if info.optional:
                    continue
                raise invalid(f"missing input '{name}' for model '{self.model_name}'")
            if t.datatype != info.datatype:
                raise invalid(
                    f"input '{name}': datatype {t.datatype} does not match the model's "
                    f"{info.datatype}"
                )
            shape = t.shape
            ok = len(shape) == len(info.shape) + 1 and all(
                e == -1 or e == d for e, d in zip(info.shape, shape[1:], strict=False)
            )
            if not ok:
                raise invalid(
                    f"input '{name}': shape {list(shape)} does not match the model's "
                    f"{[-1, *info.shape]}"
                )
            if batch == -1:
                batch = shape[0]
            elif shape[0] != batch:
                raise invalid(
                    f"input '{name}': batch size {shape[0]} differs from the other inputs' {batch}"
                )
        if batch < 1:
            raise invalid("batch size must be at least 1")
        if batch > self.max_batch_size:
            raise invalid(
                f"batch size {batch} exceeds the model's max_batch_size {self.max_batch_size}"
            )
        if req.requested_outputs is not None:
            for name in req.requested_outputs:
                if name not in self.outputs:
                    raise invalid(
                        f"unknown output '{name}' for model '{self.model_name}'; available "
                        f"{sorted(self.outputs)}"
                    )
        check_inputs(inputs, self.inputs)  # value domains (token id ranges, masks, finite)

    def _on_batch(self, t: BatchTiming) -> None:
        self.stats.on_batch(t)
        self.metrics.batch_size.observe(t.batch_size)
        self.metrics.batches.inc()

    def _select(self, req: InferRequest, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if req.requested_outputs is None:
            return {n: outputs[n] for n in self.outputs if n in outputs}
        return {n: outputs[n] for n in req.requested_outputs}

    async def infer(self, req: InferRequest) -> InferResult:
        """Answer one decoded request or raise InferError."""
        t0 = time.perf_counter_ns()
        m = self.metrics
        m.arrivals.inc()
        if not self.accepting:
            m.requests["rejected"].inc()
            raise unavailable("worker is shutting down and takes no new requests")
        self.inflight += 1
        outcome = "error"
        try:
            self.check_model(req.model_name, req.model_version)
            self.validate(req)
            lookup: CacheLookup | None = None
            to_compute = req
            if self.cache is not None:
                tl = time.perf_counter_ns()
                lookup = await self.cache.lookup(req)
                dt = time.perf_counter_ns() - tl
                if lookup.result is not None:
                    self.stats.on_cache_hit(req.batch, dt)
                    outcome = "cache_hit"
                    self.stats.d["success"].add(time.perf_counter_ns() - t0)
                    return lookup.result
                self.stats.d["cache_miss"].add(dt)
                if lookup.to_compute is not None:
                    to_compute = lookup.to_compute
            computed = await self.batcher.submit(to_compute)
            self.stats.on_computed(computed.queue_ns, computed.timing)
            m.queue_wait.observe(computed.queue_ns / 1e9)
            result = InferResult(self._select(req, computed.outputs))
            if self.cache is not None and lookup is not None:
                result = await self.cache.complete(req, lookup, result)
            outcome = "success"
            self.stats.d["success"].add(time.perf_counter_ns() - t0)
            return result
        except InferError as e:
            outcome = e.outcome
            self.stats.d["fail"].add(time.perf_counter_ns() - t0)
            raise
        except asyncio.CancelledError:
            outcome = "error"
            raise
        except Exception as e:
            log.exception("request failed")
            self.stats.d["fail"].add(time.perf_counter_ns() - t0)
            raise InferError(ErrorKind.INTERNAL, f"internal error: {e}") from None
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
            m.requests[outcome].inc()
            m.latency.observe((time.perf_counter_ns() - t0) / 1e9)

    # -- descriptions (JSON; gRPC parses the same dicts into its messages) -------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def _meta_tensor(self, t: TensorInfo) -> dict[str, Any]:
        return {
            "name": t.name,
            "datatype": t.datatype,
            "shape": [-1, *t.shape],
            **domain_metadata(t),
        }

    def model_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [self.model_version],
            "platform": PLATFORM,
            "inputs": [self._meta_tensor(t) for t in self.engine.inputs],
            "outputs": [self._meta_tensor(t) for t in self.engine.outputs],
        }

    def model_config(self) -> dict[str, Any]:
        b = self.cfg.batching

        def tensor(t: TensorInfo) -> dict[str, Any]:
            return {"name": t.name, "data_type": CONFIG_TYPES[t.datatype], "dims": list(t.shape)}

        return {
            "name": self.model_name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": {"specific": {"versions": _int_versions(self.model_version)}},
            "max_batch_size": self.max_batch_size,
            "input": [tensor(t) for t in self.engine.inputs],
            "output": [tensor(t) for t in self.engine.outputs],
            "dynamic_batching": {
                "max_queue_delay_microseconds": b.max_queue_delay_microseconds,
                "priority_levels": b.priority_levels,
                "default_priority_level": b.default_priority_level,
                "default_queue_policy": {
                    "timeout_action": "REJECT",
                    "default_timeout_microseconds": b.default_timeout_microseconds,
                    "allow_timeout_override": True,
                    "max_queue_size": b.max_queue_size,
                },
            },
            "instance_group": [{"name": self.model_name, "kind": "KIND_AUTO", "count": 1}],
            "parameters": {
                **{k: {"string_value": v} for k, v in self.cfg.model.parameters.items()},
                **domain_parameters([*self.engine.inputs, *self.engine.outputs]),
            },
        }

    def model_statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            self.check_model(name, version)
        return {"model_stats": [self.stats.to_json()]}

    def repository_index(self) -> list[dict[str, Any]]:
        state = "READY" if self.ready else "UNAVAILABLE"
        return [{"name": self.model_name, "version": self.model_version, "state": state}]


def _int_versions(version: str) -> list[int]:
    return [int(version)] if version.isdigit() else []
