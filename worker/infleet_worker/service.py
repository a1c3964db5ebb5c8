"""The request path, independent of HTTP or gRPC.

decode (protocol layer) -> validate -> cache lookup -> scheduler (the engine core,
or the in-process batcher) -> cache complete -> encode (protocol layer). A cache
hit never reaches the scheduler. The service owns the per-request statistics and
asks its gate whether it is Ready and takes requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from infleet_worker.cache.base import CacheLookup, ResultCache
from infleet_worker.config import WorkerConfig
from infleet_worker.domains import check_inputs, domain_metadata, domain_parameters
from infleet_worker.engine.base import Signature, TensorInfo
from infleet_worker.metrics import RequestMetrics
from infleet_worker.protocol.datatypes import CONFIG_TYPES
from infleet_worker.protocol.errors import ErrorKind, InferError, invalid, not_found, unavailable
from infleet_worker.scheduler import Computed, Scheduler
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


class Gate(Protocol):
    """Who decides Ready and whether new requests are taken: this process or the pod's
    supervisor (core/state.py). ``count`` publishes the requests in flight."""

    @property
    def ready(self) -> bool: ...

    @property
    def accepting(self) -> bool: ...

    def count(self, inflight: int) -> None: ...


class LocalGate:
    """In-process: the worker's own drain sequence sets these."""

    def __init__(self) -> None:
        self.ready = False
        self.accepting = True

    def count(self, inflight: int) -> None:
        pass


StatsSource = Callable[[], Awaitable[dict[str, Any]]]


class InferenceService:
    """One model behind a scheduler; shared by the HTTP and gRPC front ends.

    Created before the model is known (ports bind at once, live but not Ready);
    ``bind`` gives it the model's signature and the scheduler to submit to.
    """

    def __init__(
        self,
        cfg: WorkerConfig,
        metrics: RequestMetrics | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_name = cfg.model.name
        self.model_version = cfg.model.version
        self.metrics = metrics or RequestMetrics(self.model_name, self.model_version)
        self.stats = ModelStats(self.model_name, self.model_version)
        self.metrics.bind_stats(self.stats)  # Triton's request series, read at scrape
        self.gate: Gate = gate or LocalGate()
        self.signature: Signature | None = None
        self.scheduler: Scheduler | None = None
        self.cache: ResultCache | None = None
        self.max_batch_size = cfg.batching.max_batch_size
        self.inputs: dict[str, TensorInfo] = {}
        self.outputs: dict[str, TensorInfo] = {}
        self.stats_source: StatsSource | None = None  # the pod's merged statistics
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.metrics.bind_inflight(lambda: self.inflight)

    def bind(
        self, signature: Signature, scheduler: Scheduler, cache: ResultCache | None = None
    ) -> None:
        self.signature = signature
        self.scheduler = scheduler
        self.cache = cache
        if signature.max_batch_size > 0:
            self.max_batch_size = min(self.max_batch_size, signature.max_batch_size)
        self.inputs = {i.name: i for i in signature.inputs}
        self.outputs = {o.name: o for o in signature.outputs}

    # -- lifecycle ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Bound to a model, warmed up and not draining."""
        return self.scheduler is not None and self.gate.ready

    @property
    def accepting(self) -> bool:
        return self.gate.accepting

    async def wait_idle(self) -> None:
        """Until every accepted request has its answer."""
        while self.inflight:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.cache is not None:
            try:
                await self.cache.close()
            except Exception:
                log.exception("cache close failed")

    def _sig(self) -> Signature:
        if self.signature is None:
            raise unavailable("the model is still loading; retry")
        return self.signature

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

    def _select(self, req: InferRequest, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if req.requested_outputs is None:
            return {n: outputs[n] for n in self.outputs if n in outputs}
        return {n: outputs[n] for n in req.requested_outputs}

    async def infer(self, req: InferRequest) -> InferResult:
        """Answer one decoded request or raise InferError."""
        t0 = time.perf_counter_ns()
        m = self.metrics
        m.arrivals.inc()
        if not self.gate.accepting:
            m.finish("rejected", time.perf_counter_ns() - t0)
            raise unavailable("worker is shutting down and takes no new requests")
        scheduler = self.scheduler
        if scheduler is None:
            m.finish("rejected", time.perf_counter_ns() - t0)
            raise unavailable("the model is still loading; retry")
        self.inflight += 1
        self.gate.count(self.inflight)
        outcome = "error"
        computed: Computed | None = None
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
            computed = await scheduler.submit(to_compute)
            self.stats.on_computed(computed.queue_ns, computed.timing)
            m.queued(computed.queue_ns)
            result = InferResult(self._select(req, computed.outputs), release=computed.release)
            if self.cache is not None and lookup is not None:
                result = await self.cache.complete(req, lookup, result)
                if result.release is None:  # the cache built new arrays
                    computed.release()
            computed = None  # the protocol layer releases it after encoding
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
            if computed is not None:
                computed.release()
            self.inflight -= 1
            self.gate.count(self.inflight)
            if self.inflight == 0:
                self._idle.set()
            m.finish(outcome, time.perf_counter_ns() - t0)

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
        sig = self._sig()
        return {
            "name": self.model_name,
            "versions": [self.model_version],
            "platform": PLATFORM,
            "inputs": [self._meta_tensor(t) for t in sig.inputs],
            "outputs": [self._meta_tensor(t) for t in sig.outputs],
        }

    def model_config(self) -> dict[str, Any]:
        b = self.cfg.batching
        sig = self._sig()

        def tensor(t: TensorInfo) -> dict[str, Any]:
            return {"name": t.name, "data_type": CONFIG_TYPES[t.datatype], "dims": list(t.shape)}

        return {
            "name": self.model_name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": {"specific": {"versions": _int_versions(self.model_version)}},
            "max_batch_size": self.max_batch_size,
            "input": [tensor(t) for t in sig.inputs],
            "output": [tensor(t) for t in sig.outputs],
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
                **domain_parameters([*sig.inputs, *sig.outputs]),
            },
        }

    async def model_statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        """Triton statistics: this process's, or the whole pod's when a source is set."""
        if name:
            self.check_model(name, version)
        doc = self.stats.to_json() if self.stats_source is None else await self.stats_source()
        return {"model_stats": [doc]}

    def repository_index(self) -> list[dict[str, Any]]:
        state = "READY" if self.ready else "UNAVAILABLE"
        return [{"name": self.model_name, "version": self.model_version, "state": state}]


def _int_versions(version: str) -> list[int]:
    return [int(version)] if version.isdigit() else []
