"""Dynamic batching: concurrent requests merge, answers stay with their request,
priorities, queue timeouts and a bounded queue."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from worker_engines import IN_FEATURES, EchoEngine, MLPEngine
from worker_fixtures import ServerThread, worker_config


def forward(engine: MLPEngine, x: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return engine.module(torch.from_numpy(x))


def http_input(x: np.ndarray) -> httpclient.InferInput:
    i = httpclient.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def test_concurrent_http_clients_batch_and_keep_their_answers() -> None:
    engine = MLPEngine(delay_s=0.005)
    cfg = worker_config(batching={"maxBatchSize": 16, "maxQueueDelayMicroseconds": 5000})
    with ServerThread(cfg, engine) as s:

        def client(k: int) -> None:
            with httpclient.InferenceServerClient(s.http_url) as c:
                for j in range(4):
                    x = np.full((1, IN_FEATURES), k * 10 + j, np.float32)
                    x[0, 1:] = np.arange(IN_FEATURES - 1) * (k + 1) / 7
                    r = c.infer("mlp", [http_input(x)], request_id=f"{k}-{j}")
                    assert r.get_response()["id"] == f"{k}-{j}"
                    got = torch.from_numpy(r.as_numpy("output").copy())
                    torch.testing.assert_close(got, forward(engine, x))

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))
        with httpclient.InferenceServerClient(s.http_url) as c:
            st = c.get_inference_statistics("mlp")["model_stats"][0]
    assert st["inference_count"] == 128
    assert st["execution_count"] < st["inference_count"]
    assert max(engine.batches) > 1 and sum(engine.batches) == 128
    assert any(b["batch_size"] > 1 for b in st["batch_stats"])


async def test_concurrent_aio_grpc_and_http_tasks() -> None:
    engine = MLPEngine(delay_s=0.003)
    with ServerThread(worker_config(), engine) as s:
        gc = grpcaio.InferenceServerClient(s.grpc_url)
        hc = httpaio.InferenceServerClient(s.http_url)

        async def one(k: int) -> None:
            rows = 1 + k % 3  # client batches of 1-3 rows merge too
            x = np.random.default_rng(k).standard_normal((rows, IN_FEATURES)).astype(np.float32)
            if k % 2:
                i = grpcaio.InferInput("input", list(x.shape), "FP32")
                i.set_data_from_numpy(x)
                r = await gc.infer("mlp", [i])
            else:
                h = httpaio.InferInput("input", list(x.shape), "FP32")
                h.set_data_from_numpy(x)
                r = await hc.infer("mlp", [h])
            torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()),
                                       forward(engine, x))  # fmt: skip

        try:
            await asyncio.gather(*(one(k) for k in range(64)))
        finally:
            await gc.close()
            await hc.close()
    assert len(engine.batches) < 64 and max(engine.batches) > 3


def test_different_item_shapes_go_in_different_batches() -> None:
    engine = EchoEngine("FP32")
    with ServerThread(worker_config(name="echo"), engine) as s:

        def one(k: int) -> None:
            width = 3 if k % 2 else 5
            x = np.full((1, width), k, np.float32)
            with httpclient.InferenceServerClient(s.http_url) as c:
                i = httpclient.InferInput("INPUT", [1, width], "FP32")
                i.set_data_from_numpy(x)
                r = c.infer("echo", [i])
                np.testing.assert_array_equal(r.as_numpy("OUTPUT"), x)
                np.testing.assert_array_equal(r.as_numpy("DOUBLE"), 2 * x)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(32)))


def _gated(**batching: int) -> tuple[MLPEngine, ServerThread]:
    engine = MLPEngine()
    engine.gate = threading.Event()
    cfg = worker_config(batching={"maxQueueDelayMicroseconds": 0, **batching})
    return engine, ServerThread(cfg, engine)


def test_full_queue_answers_503_and_unavailable_at_once() -> None:
    engine, server = _gated(maxQueueSize=4, maxBatchSize=1)
    with server as s, ThreadPoolExecutor(8) as pool:
        x = np.zeros((1, IN_FEATURES), np.float32)

        def send() -> object:
            with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                return c.infer("mlp", [http_input(x)])

        busy = pool.submit(send)
        assert engine.started.wait(10)  # the engine holds one batch; the queue is empty
        queued = [pool.submit(send) for _ in range(4)]
        deadline = time.monotonic() + 10
        while s.worker.batcher.queue_depth < 4:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with httpclient.InferenceServerClient(s.http_url) as c:
            t0 = time.perf_counter()
            with pytest.raises(InferenceServerException) as err:
                c.infer("mlp", [http_input(x)])
            http_s = time.perf_counter() - t0
        assert err.value.status() == "503" and "queue is full" in err.value.message()
        with grpcclient.InferenceServerClient(s.grpc_url) as g:
            i = grpcclient.InferInput("input", [1, IN_FEATURES], "FP32")
            i.set_data_from_numpy(x)
            t0 = time.perf_counter()
            with pytest.raises(InferenceServerException) as gerr:
                g.infer("mlp", [i])
            grpc_s = time.perf_counter() - t0
        assert gerr.value.status() == "StatusCode.UNAVAILABLE"
        assert "queue is full" in gerr.value.message()
        assert http_s < 0.5 and grpc_s < 0.5, (http_s, grpc_s)
        engine.gate.set()  # type: ignore[union-attr]
        busy.result(10)
        for f in queued:
            f.result(10)
    assert sum(engine.batches) == 5


def test_shedding_refuses_the_lower_priority_first() -> None:
    """shedQueueDepth 2 with 3 levels: while 2 wait, level 2 is refused at once
    (503, 'shed'), level 1 still queues; at 1 waiting, level 3 is already refused."""
    engine = MLPEngine()
    engine.gate = threading.Event()
    cfg = worker_config(
        batching={"maxQueueDelayMicroseconds": 0, "maxBatchSize": 1, "priorityLevels": 3},
        server={"shedQueueDepth": 2},
    )
    x = np.zeros((1, IN_FEATURES), np.float32)
    with ServerThread(cfg, engine) as s, ThreadPoolExecutor(8) as pool:

        def send(priority: int) -> object:
            with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                return c.infer("mlp", [http_input(x)], priority=priority)

        def wait_depth(n: int) -> None:
            deadline = time.monotonic() + 10
            while s.worker.batcher.queue_depth < n:  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.01)

        def refused(priority: int) -> str:
            with pytest.raises(InferenceServerException) as e:
                send(priority)
            assert e.value.status() == "503"
            return str(e.value.message())

        busy = pool.submit(send, 1)
        assert engine.started.wait(10)  # the engine holds one batch; the queue is empty
        first = pool.submit(send, 2)  # 0 waiting: even level 3 would queue
        wait_depth(1)
        assert "priority level 3 is shed" in refused(3)  # 1 >= 2 / 2
        second = pool.submit(send, 2)  # 1 < 2: level 2 still queues
        wait_depth(2)
        assert "priority level 2 is shed" in refused(2)
        high = pool.submit(send, 1)  # level 1 is never shed
        wait_depth(3)
        engine.gate.set()  # type: ignore[union-attr]
        for f in (busy, first, second, high):
            f.result(10)


def test_adaptive_batching_forms_larger_batches_only_while_overloaded() -> None:
    """maxBatchSize 2; past 3 waiting, batches of up to 8: 9 queued behind a held batch
    run as 8 + 1 (not 2+2+2+2+1); a client's request stays bounded by 2 rows."""
    engine = MLPEngine()
    engine.gate = threading.Event()
    cfg = worker_config(
        batching={"maxQueueDelayMicroseconds": 0, "maxBatchSize": 2},
        server={
            "adaptiveBatching": {
                "maxBatchSize": 8, "maxQueueDelayMicroseconds": 0, "queueDepth": 3,
            }
        },
    )  # fmt: skip
    x = np.random.default_rng(3).standard_normal((10, IN_FEATURES)).astype(np.float32)
    with ServerThread(cfg, engine) as s, ThreadPoolExecutor(12) as pool:

        def send(k: int) -> np.ndarray:
            with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                return c.infer("mlp", [http_input(x[k : k + 1])]).as_numpy("output")

        busy = pool.submit(send, 0)
        assert engine.started.wait(10)
        queued = [pool.submit(send, k) for k in range(1, 10)]
        deadline = time.monotonic() + 10
        while s.worker.batcher.queue_depth < 9:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.gate.set()  # type: ignore[union-attr]
        outs = [busy.result(10)] + [f.result(10) for f in queued]
        with (
            httpclient.InferenceServerClient(s.http_url) as c,
            pytest.raises(InferenceServerException, match="exceeds the model's max_batch_size 2"),
        ):
            c.infer("mlp", [http_input(x[:3])])
    assert engine.batches == [1, 8, 1]  # overloaded: 8; then 1 waiting: back to <= 2
    for k, out in enumerate(outs):
        torch.testing.assert_close(torch.from_numpy(out.copy()), forward(engine, x[k : k + 1]))


def test_queue_timeout_is_an_error_and_never_runs() -> None:
    engine, server = _gated(maxBatchSize=8)
    with server as s, ThreadPoolExecutor(4) as pool:

        def send(rows: int, timeout_us: int | None) -> object:
            x = np.full((rows, IN_FEATURES), rows, np.float32)
            with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                return c.infer("mlp", [http_input(x)], timeout=timeout_us)

        busy = pool.submit(send, 1, None)
        assert engine.started.wait(10)
        t0 = time.perf_counter()
        with pytest.raises(InferenceServerException) as err:
            send(3, 100_000)  # 100 ms
        took = time.perf_counter() - t0
        assert "timed out" in err.value.message() and "not executed" in err.value.message()
        assert 0.09 < took < 2
        with grpcclient.InferenceServerClient(s.grpc_url) as g:
            i = grpcclient.InferInput("input", [2, IN_FEATURES], "FP32")
            i.set_data_from_numpy(np.full((2, IN_FEATURES), 2, np.float32))
            with pytest.raises(InferenceServerException) as gerr:
                g.infer("mlp", [i], timeout=50_000)
            assert gerr.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        engine.gate.set()  # type: ignore[union-attr]
        busy.result(10)
        send(1, None)
    assert engine.batches == [1, 1]  # the timed-out 3- and 2-row requests never ran


def test_priority_levels_run_high_first() -> None:
    engine, server = _gated(maxBatchSize=1, priorityLevels=3, defaultPriorityLevel=2)
    with server as s, ThreadPoolExecutor(8) as pool:

        def send(value: float, priority: int) -> object:
            x = np.full((1, IN_FEATURES), value, np.float32)
            with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                return c.infer("mlp", [http_input(x)], priority=priority)

        busy = pool.submit(send, 0, 0)
        assert engine.started.wait(10)
        futures = []
        for value, prio in ((3.0, 3), (2.0, 0), (1.0, 1), (2.5, 2)):
            futures.append(pool.submit(send, value, prio))
            deadline = time.monotonic() + 5
            while s.worker.batcher.queue_depth < len(futures):  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.005)
        engine.gate.set()  # type: ignore[union-attr]
        for f in [busy, *futures]:
            f.result(10)
    assert engine.firsts == [0.0, 1.0, 2.0, 2.5, 3.0]  # default (0 -> level 2) is FIFO in level
