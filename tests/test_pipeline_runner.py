"""PipelineRunner on CPU "devices": equality with one device, ordering, errors, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, EngineError, ModelLoadError, TensorInfo
from infleet_worker.engine.pipeline.build import build_pipeline, load_pipeline_engine
from infleet_worker.engine.pipeline.schedule import check_order
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

WIDTH = 16
CPU = torch.device("cpu")
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [WIDTH]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [WIDTH]}],
}


class Boom(nn.Module):
    """Fails on a batch whose first value is exactly 13 (one poisoned request)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 13.0).any()):
            raise RuntimeError("poisoned row")
        return x


class Sleep(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def sequential(depth: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    return nn.Sequential(*layers)


def seq_factory(params: dict[str, str]) -> nn.Module:
    model = sequential(int(params.get("depth", "4")))
    model.inputs = [TensorInfo("x", "FP32", (WIDTH,))]  # type: ignore[assignment]
    model.outputs = [TensorInfo("y", "FP32", (WIDTH,))]  # type: ignore[assignment]
    return model


def list_factory(params: dict[str, str]) -> list[nn.Module]:
    """A python:// factory naming its own split points: one list entry per stage."""
    model = sequential(3)
    return [model[:2], model[2:4], model[4:]]


def config(n: int, micro: int = 1, precision: str = "fp32", **engine: object) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": "python://test_pipeline_runner:seq_factory"},
            "engine": {
                "device": "cpu",
                "pipelineParallel": n,
                "microBatches": micro,
                "precision": precision,
                **engine,
            },
            "batching": {"maxBatchSize": 16},
        }
    )


def pipeline(model: nn.Module, n: int, micro: int = 1, **kw: object) -> TorchEngine:
    cfg = config(n, micro, warmup=False)
    view = ServedView(model, **{k: [TensorInfo(**d) for d in v] for k, v in _sig().items()})
    return build_pipeline(cfg, view, CPU, **kw)  # type: ignore[arg-type]


def _sig() -> dict[str, list[dict[str, object]]]:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": (WIDTH,)}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": (WIDTH,)}],
    }


def batch(rows: int, seed: int = 1) -> dict[str, Tensor]:
    data = np.random.default_rng(seed).standard_normal((rows, WIDTH)).astype(np.float32)
    return {"x": Tensor("FP32", data)}


def reference(model: nn.Module, inputs: dict[str, Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(inputs["x"].array)).numpy()


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("micro", [1, 3, 4, 16])
def test_matches_single_device(n: int, micro: int) -> None:
    model = sequential()
    inputs = batch(10)  # 10 rows: 3 and 4 micro-batches do not divide it, 16 > rows
    expected = reference(model, inputs)
    threads = torch.get_num_threads()
    engine = pipeline(model, n, micro, cpu_threads=threads, trace=True)
    try:
        out = engine.run(inputs)["y"].array
        if micro == 1:  # same shapes, same kernels, same thread count: bit-identical
            np.testing.assert_array_equal(out, expected)
        else:  # CPU matmuls are not batch-invariant
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        trace = engine.runner.trace
        assert trace is not None
        assert len(trace) == min(micro, 10) * n
        check_order(trace)
    finally:
        engine.close()


def test_ordering_with_real_overlap() -> None:
    """Slow stages: stage 1 overlaps stage 0 in time, yet never runs ahead of it."""
    model = nn.Sequential(Sleep(0.04), Sleep(0.04))
    engine = pipeline(model, 2, 4, trace=True)
    try:
        start = time.perf_counter()
        engine.run(batch(8))
        elapsed = time.perf_counter() - start
        trace = engine.runner.trace
        assert trace is not None
        check_order(trace)
        # 4 micro-batches x 2 stages x 40 ms = 320 ms serially; the pipeline takes 5 clocks.
        assert elapsed < 0.28, elapsed
    finally:
        engine.close()


def test_failing_stage_fails_only_that_batch() -> None:
    model = nn.Sequential(nn.Identity(), Boom(), nn.Identity())
    engine = pipeline(model, 3, 4)
    try:
        bad = batch(8)
        bad["x"].array[5, 0] = 13.0  # row 5 lies in micro-batch 3 of 4
        with pytest.raises(
            EngineError,
            match=r"pipeline stage 2 of 3 \(cpu.*Boom\) failed on "
            r"micro-batch 3 of 4: RuntimeError: poisoned row",
        ):
            engine.run(bad)
        good = batch(8, seed=2)
        np.testing.assert_array_equal(engine.run(good)["y"].array, good["x"].array)
        with pytest.raises(EngineError, match="stage 2 of 3"):
            engine.run(bad)
        np.testing.assert_array_equal(engine.run(good)["y"].array, good["x"].array)
    finally:
        engine.close()


def test_close_mid_batch_does_not_hang() -> None:
    model = nn.Sequential(Sleep(0.05), Sleep(0.05))
    engine = pipeline(model, 2, 8)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            engine.run(batch(8))
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=serve)
    caller.start()
    time.sleep(0.12)
    start = time.perf_counter()
    engine.close()
    caller.join(5)
    assert not caller.is_alive()
    assert time.perf_counter() - start < 2.0
    assert errors and "shut down mid-batch" in str(errors[0])
    assert not any(s.thread.is_alive() for s in engine.runner.stages)
    with pytest.raises(EngineError, match="shut down"):
        engine.run(batch(2))


def test_bf16_and_fp16_within_tolerance() -> None:
    model = sequential()
    inputs = batch(12)
    expected = reference(model, inputs)
    for precision in ("bf16", "fp16"):
        cfg = config(2, 3, precision, warmup=True)
        engine = load_pipeline_engine(cfg)
        try:
            engine.warmup()
            out = engine.run(inputs)["y"].array
            assert out.dtype == np.float32  # cast back to the signature's dtype
            np.testing.assert_allclose(out, expected, rtol=0, atol=5e-2)
        finally:
            engine.close()


def test_python_factory_list_keeps_user_split_points() -> None:
    wire = config(3, 2).to_wire()
    wire["model"] = {
        "name": "m",
        "source": "python://test_pipeline_runner:list_factory",
        **SIGNATURE,
    }
    cfg = WorkerConfig.model_validate(wire)
    engine = load_pipeline_engine(cfg)
    assert isinstance(engine, Engine)
    try:
        stages = engine.runner.stages  # type: ignore[attr-defined]
        assert [len(list(s.module.children())) for s in stages] == [1, 1, 1]
        inputs = batch(5)
        expected = reference(nn.Sequential(*list_factory({})), inputs)
        np.testing.assert_allclose(engine.run(inputs)["y"].array, expected, rtol=1e-5, atol=1e-5)
    finally:
        engine.close()
    bad = WorkerConfig.model_validate(
        {**cfg.to_wire(), "engine": {"device": "cpu", "pipelineParallel": 2}}
    )
    with pytest.raises(ModelLoadError, match=r"names 3 pipeline stages.*pipelineParallel is 2"):
        load_pipeline_engine(bad)


def test_too_many_stages_is_a_load_error() -> None:
    cfg = WorkerConfig.model_validate(
        {
            **config(8).to_wire(),
            "model": {**config(8).to_wire()["model"], "parameters": {"depth": "2"}},
        }
    )
    with pytest.raises(
        ModelLoadError,
        match="pipelineParallel=8 needs at least 8 splittable blocks, but the model has 4",
    ):
        load_pipeline_engine(cfg)


def test_time_balance() -> None:
    """Parameter-free blocks all look alike by parameters ([2, 2]); timing finds [1, 3]."""
    model = nn.Sequential(Sleep(0.03), Sleep(0.005), Sleep(0.005), Sleep(0.005))
    model.pipeline_balance = "time"  # type: ignore[assignment]
    engine = pipeline(model, 2, 1)
    try:
        assert [len(list(s.module.children())) for s in engine.runner.stages] == [1, 3]
    finally:
        engine.close()


async def test_dynamic_batcher_drives_the_pipeline() -> None:
    """The batcher keeps the pipeline fed; a failing stage fails only that batch's requests."""
    from concurrent.futures import ThreadPoolExecutor

    from infleet_worker.batcher import DynamicBatcher
    from infleet_worker.protocol.errors import InferError
    from infleet_worker.tensors import InferRequest

    model = nn.Sequential(Boom(), sequential(2), sequential(2, seed=1))
    engine = pipeline(model, 3, 2)
    executor = ThreadPoolExecutor(1)
    batcher = DynamicBatcher(
        engine, executor, max_batch_size=16, max_queue_delay_us=20_000, max_queue_size=64
    )
    batcher.start()
    try:

        def request(rows: int, seed: int) -> InferRequest:
            return InferRequest("m", "1", batch(rows, seed))

        poisoned = request(2, 0)
        poisoned.inputs["x"].array[1, 0] = 13.0
        with pytest.raises(InferError, match=r"pipeline stage 1 of 3 .*poisoned row"):
            await batcher.submit(poisoned)
        requests = [request(1 + i % 3, 10 + i) for i in range(8)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        for req, res in zip(requests, results, strict=True):
            want = reference(model, req.inputs)
            np.testing.assert_allclose(res.outputs["y"].array, want, rtol=1e-5, atol=1e-5)
        assert max(r.timing.batch_size for r in results) > 3  # requests were merged
    finally:
        await batcher.stop()
        engine.close()
        executor.shutdown()
