"""ProcessEngine: the model in a child process, same interface, same errors, no lost child."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, EngineError, ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.process import ProcessEngine
from infleet_worker.tensors import Tensor
from worker_fixtures import ServerThread, worker_config

SMALL_MLP = {"width": "32", "depth": "2"}


def config(source: str, parameters: dict[str, str] | None = None) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": source, "parameters": parameters or {}},
            "engine": {"device": "cpu"},
            "batching": {"maxBatchSize": 8},
        }
    )


def fp32(*shape: int, first: float | None = None) -> Tensor:
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if first is not None:
        a[0, 0] = first
    return Tensor("FP32", a)


@pytest.fixture
def mlp() -> Iterator[ProcessEngine]:
    engine = ProcessEngine(config("builtin://mlp", SMALL_MLP))
    yield engine
    engine.close()


def gone(engine: ProcessEngine, timeout: float = 10) -> bool:
    """The child exited (``alive`` reaps it, so a zombie does not count as running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not engine.alive:
            return True
        time.sleep(0.05)
    return False


def test_matches_the_in_process_engine(mlp: ProcessEngine) -> None:
    local = load_engine(config("builtin://mlp", SMALL_MLP))
    assert isinstance(mlp, Engine)
    assert (mlp.name, mlp.inputs, mlp.outputs) == (local.name, local.inputs, local.outputs)
    assert (mlp.max_batch_size, mlp.row_independent) == (8, True)
    assert mlp.pid != os.getpid()
    mlp.warmup()
    x = {"input": fp32(5, 32)}
    want = local.run(x)["output"].array
    got_sync = mlp.run(x)["output"]
    got_async = asyncio.run(mlp.run_async(x))["output"]
    assert got_sync.datatype == got_async.datatype == "FP32"
    np.testing.assert_allclose(got_sync.array, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_async.array, want, rtol=1e-5, atol=1e-6)


def test_load_errors_fail_start_up_with_the_loaders_message() -> None:
    with pytest.raises(ModelLoadError, match=r"builtin://nope.*builtins: encoder-base"):
        ProcessEngine(config("builtin://nope"))
    with pytest.raises(ModelLoadError, match="this model cannot load"):
        ProcessEngine(config("python://worker_engines:broken"))


def test_engine_error_fails_that_batch_only() -> None:
    engine = ProcessEngine(config("python://worker_engines:failing"))
    try:
        x = {"input": fp32(2, 16)}
        with pytest.raises(EngineError, match="poisoned row"):
            engine.run({"input": fp32(2, 16, first=-999)})
        assert engine.run(x)["output"].array.shape == (2, 8)

        async def both() -> None:
            with pytest.raises(EngineError, match="poisoned row"):
                await engine.run_async({"input": fp32(2, 16, first=-999)})
            assert (await engine.run_async(x))["output"].array.shape == (2, 8)

        asyncio.run(both())
    finally:
        engine.close()


def test_a_dead_child_is_reported_not_hung(mlp: ProcessEngine) -> None:
    async def scenario() -> int:
        dead = asyncio.create_task(mlp.wait_dead())
        await mlp.run_async({"input": fp32(1, 32)})
        os.kill(mlp.pid, signal.SIGKILL)
        with pytest.raises(EngineError, match=rf"engine process \(pid {mlp.pid}\) died"):
            await mlp.run_async({"input": fp32(1, 32)})
        return await asyncio.wait_for(dead, 10)

    assert asyncio.run(scenario()) == -signal.SIGKILL
    assert not mlp.alive
    with pytest.raises(EngineError, match="died"):
        mlp.run({"input": fp32(1, 32)})


def test_close_ends_the_child(mlp: ProcessEngine) -> None:
    mlp.close()
    assert gone(mlp)


def test_child_ends_when_the_parent_channel_closes(mlp: ProcessEngine) -> None:
    """A SIGKILLed worker leaves no engine behind: the child sees EOF and exits."""
    mlp._control.close()  # what the kernel does to every fd of a killed parent
    mlp._data.close()
    assert gone(mlp)


def test_batches_reach_the_child_from_the_event_loop() -> None:
    """Served over gRPC and HTTP: the batcher awaits the child, concurrent rows merge."""
    cfg = worker_config(
        source="python://worker_engines:mlp", batching={"maxQueueDelayMicroseconds": 20000}
    )
    engine = ProcessEngine(cfg)
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    with ServerThread(cfg, engine) as server:
        g = grpcclient.InferenceServerClient(server.grpc_url)
        h = httpclient.InferenceServerClient(server.http_url, concurrency=8)
        gi = grpcclient.InferInput("input", [1, 16], "FP32")
        gi.set_data_from_numpy(x)
        ref = g.infer("mlp", [gi]).as_numpy("output")
        hi = httpclient.InferInput("input", [1, 16], "FP32")
        hi.set_data_from_numpy(x)
        pending = [h.async_infer("mlp", [hi]) for _ in range(8)]
        outs = [p.get_result().as_numpy("output") for p in pending]
        for out in outs:
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)  # batched: not bitwise
        stats = g.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
        assert int(stats["inference_count"]) == 9
        assert int(stats["execution_count"]) < 9  # some of the 8 concurrent ones merged
        g.close()
        h.close()
    assert gone(engine)  # the worker's stop closed the engine
