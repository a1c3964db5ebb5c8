"""The worker pod layout as users run it: a supervisor, front-end processes on shared
ports, and one engine core. Real processes, real tritonclient (HTTP and gRPC)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from worker_engines import IN_FEATURES, make_module
from worker_process import WorkerProcess

pytestmark = pytest.mark.timeout(180)


def _reference(x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = make_module()(torch.from_numpy(x)).numpy()
    return out


def _start(tmp_path: Path, source: str, *extra: str) -> WorkerProcess:
    w = WorkerProcess(
        "--model-source", source, "--model-name", "mlp",
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--front-ends", "2", "--max-batch-size", "16", "--max-queue-delay-us", "20000",
        "--drain-seconds", "0", *extra,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        w.wait_ready()
    except BaseException:
        w.stop()
        raise
    return w


@pytest.fixture(params=["inline", "overlap"])
def pod(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """A pod whose engine core runs batches inline (CPU default) or on its engine
    thread beside the loop (GPU default, server.overlapBatches)."""
    cfg = tmp_path / "overlap.json"
    overlap = request.param == "overlap"
    cfg.write_text(json.dumps({"server": {"overlapBatches": overlap}}))
    w = _start(tmp_path, "python://worker_engines:poison", "--config", str(cfg))
    yield w
    w.stop()


def _infer(w: WorkerProcess, protocol: str, x: np.ndarray) -> np.ndarray:
    if protocol == "http":
        hc = httpclient.InferenceServerClient(f"127.0.0.1:{w.ports['http']}", network_timeout=60)
        i = httpclient.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        out = hc.infer("mlp", [i]).as_numpy("output")
        hc.close()
    else:
        gc = grpcclient.InferenceServerClient(f"127.0.0.1:{w.ports['grpc']}")
        i = grpcclient.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        out = gc.infer("mlp", [i], client_timeout=60).as_numpy("output")
        gc.close()
    assert out is not None
    return out


def _metric(w: WorkerProcess, name: str) -> float:
    page = urllib.request.urlopen(f"http://127.0.0.1:{w.ports['metrics']}/metrics").read()
    total = 0.0
    for line in page.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, IN_FEATURES), dtype=np.float32)


def test_answers_equal_the_model_across_front_ends_and_batches(pod: WorkerProcess) -> None:
    """Mixed batch sizes over both protocols, concurrently (so rows from both front
    ends merge in the core): every answer is the model's, the counters add up."""
    jobs = [("http" if k % 2 else "grpc", _rows(1 + k % 5, k)) for k in range(40)]
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda j: _infer(pod, *j), jobs))
    for (_, x), out in zip(jobs, outs, strict=True):
        np.testing.assert_allclose(out, _reference(x), rtol=1e-5, atol=1e-6)
    assert _metric(pod, 'infleet_requests_total{model="mlp",outcome="success"') == 40
    assert _metric(pod, "infleet_request_arrivals_total") == 40
    rows = sum(len(x) for _, x in jobs)
    assert _metric(pod, "infleet_batch_size_sum") == rows
    assert _metric(pod, "infleet_batches_total") < 40  # requests were merged
    stats = httpclient.InferenceServerClient(f"127.0.0.1:{pod.ports['http']}")
    doc = stats.get_inference_statistics("mlp")["model_stats"][0]
    assert int(doc["inference_count"]) == rows
    assert int(doc["inference_stats"]["success"]["count"]) == 40


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_poisoned_request_fails_alone(pod: WorkerProcess, protocol: str) -> None:
    """A request the model raises on, and one whose output is NaN, batched with good
    ones: only they fail (500, naming the problem); the rest get what they get alone."""
    good = [_rows(1 + k % 3, 100 + k) for k in range(8)]
    raising = _rows(2, 1)
    raising[1, 0] = -999
    nan = _rows(1, 2)
    nan[0, 0] = -555

    def send(x: np.ndarray) -> np.ndarray | InferenceServerException:
        try:
            return _infer(pod, protocol, x)
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(send, x) for x in [*good[:4], raising, nan, *good[4:]]]
        results = [f.result() for f in futures]
    bad_raise, bad_nan = results[4], results[5]
    assert isinstance(bad_raise, InferenceServerException), bad_raise
    assert "poisoned row" in bad_raise.message()
    assert isinstance(bad_nan, InferenceServerException), bad_nan
    assert "output 'output' is not finite" in bad_nan.message(), bad_nan
    expected = "500" if protocol == "http" else "StatusCode.INTERNAL"
    assert bad_raise.status() == expected and bad_nan.status() == expected
    for x, out in zip(good, [*results[:4], *results[6:]], strict=True):
        assert isinstance(out, np.ndarray), out
        np.testing.assert_allclose(out, _reference(x), rtol=1e-5, atol=1e-6)
    assert _metric(pod, "infleet_batches_total") < 10  # they really shared batches
    assert _metric(pod, "infleet_isolated_failures_total") >= 1


def test_killing_a_front_end_is_survived(pod: WorkerProcess) -> None:
    (victim, _other) = pod.children("infleet_worker.frontend")
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(pod.children("infleet_worker.frontend")) < 2 or victim in pod.children(
        "infleet_worker.frontend"
    ):
        assert time.monotonic() < deadline, pod.log()
        time.sleep(0.1)
    for k in range(10):  # new connections spread over both, the new one included
        x = _rows(2, k)
        np.testing.assert_allclose(_infer(pod, "grpc", x), _reference(x), rtol=1e-5, atol=1e-6)
    assert pod.proc.poll() is None
    assert "event=frontend_restart" in pod.log()


def test_a_dead_engine_core_fails_pending_as_retryable_and_exits(pod: WorkerProcess) -> None:
    """A model that kills its process mid-batch: the requests in flight get 503 (retry
    elsewhere), not a 500 that reads like a model bug; the pod exits 1 at once."""
    victim = _rows(1, 0)
    victim[0, 0] = -777
    bystander = _rows(1, 1)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_infer, pod, "http", x) for x in (victim, bystander)]
        with pytest.raises(InferenceServerException) as err:
            futures[0].result(30)
        assert err.value.status() == "503" and "retry" in err.value.message(), err.value
        try:  # in the victim's batch (usually): 503 too; in an earlier one: its answer
            out = futures[1].result(30)
            np.testing.assert_allclose(out, _reference(bystander), rtol=1e-5, atol=1e-6)
        except InferenceServerException as e:
            assert e.status() == "503" and "retry" in e.message(), e
    assert pod.proc.wait(30) == 1
    time.sleep(0.2)
    assert "event=engine_died" in pod.log()
    assert pod.lines[-1].split(" event=")[0].endswith("the engine core died (exit code -9)"), (
        pod.log()
    )


def test_a_fatal_device_error_fails_everything_retryable_and_exits(pod: WorkerProcess) -> None:
    """After a device-side assert the device is not trusted: no bisection, 503s, exit."""
    fatal = _rows(1, 0)
    fatal[0, 0] = -666
    with pytest.raises(InferenceServerException) as err:
        _infer(pod, "grpc", fatal)
    assert err.value.status() == "StatusCode.UNAVAILABLE", err.value
    assert pod.proc.wait(30) == 1
    time.sleep(0.2)
    assert "event=device_lost" in pod.log() and "event=engine_died" in pod.log()
    assert "device-side assert" in pod.lines[-1], pod.log()  # the termination message


def test_sigterm_under_load_drains_every_accepted_request(tmp_path: Path) -> None:
    w = _start(tmp_path, "python://worker_engines:poison", "--model-param", "delay_ms=20")
    try:
        xs = [_rows(1 + k % 4, k) for k in range(60)]
        with ThreadPoolExecutor(24) as pool:
            futures = [
                pool.submit(_infer, w, "grpc" if k % 2 else "http", x) for k, x in enumerate(xs)
            ]
            time.sleep(0.3)
            w.proc.send_signal(signal.SIGTERM)
            outcomes: list[np.ndarray | Exception] = []
            for f in futures:
                try:
                    outcomes.append(f.result(60))
                except Exception as e:  # 503, or a connection the closing server refused
                    outcomes.append(e)
        assert w.proc.wait(60) == 0, w.log()
        served = 0
        for x, out in zip(xs, outcomes, strict=True):
            if isinstance(out, np.ndarray):
                np.testing.assert_allclose(out, _reference(x), rtol=1e-5, atol=1e-6)
                served += 1
            elif isinstance(out, InferenceServerException):  # refused after the drain
                assert out.status() in ("503", "StatusCode.UNAVAILABLE"), out
            else:  # a new connection raced the listener's close: never accepted
                assert "connection" in f"{type(out).__name__} {out}".lower(), repr(out)
        assert served > 0
    finally:
        w.stop()


def test_front_ends_shed_the_low_priority_first(tmp_path: Path) -> None:
    """--shed-queue-depth 2: with the core busy and requests waiting, priority 2 is
    refused at once from the shared counters while priority 1 is served."""
    w = _start(
        tmp_path, "python://worker_engines:poison", "--model-param", "delay_ms=800",
        "--max-queue-delay-us", "0", "--max-batch-size", "1", "--priority-levels", "2",
        "--shed-queue-depth", "2",
    )  # fmt: skip
    try:
        url = f"127.0.0.1:{w.ports['http']}"

        def send(priority: int) -> tuple[float, str]:
            t0 = time.monotonic()
            with httpclient.InferenceServerClient(url, network_timeout=60) as c:
                i = httpclient.InferInput("input", [1, IN_FEATURES], "FP32")
                i.set_data_from_numpy(_rows(1, priority))
                try:
                    c.infer("mlp", [i], priority=priority)
                    return time.monotonic() - t0, "served"
                except InferenceServerException as e:
                    return time.monotonic() - t0, f"{e.status()} {e.message()}"

        with ThreadPoolExecutor(8) as pool:
            high = [pool.submit(send, 1) for _ in range(4)]  # the core is busy 3.2 s
            deadline = time.monotonic() + 10
            while _metric(w, "infleet_queue_depth{") < 3:  # 3 waiting behind one running
                assert time.monotonic() < deadline, "the high-priority requests never queued"
                time.sleep(0.02)
            low = [pool.submit(send, 2) for _ in range(3)]
            lows = [f.result() for f in low]
            highs = [f.result() for f in high]
        assert all(r == "served" for _, r in highs), highs
        for dt, r in lows:
            assert r.startswith("503") and "priority level 2 is shed" in r, r
            assert dt < 0.4, f"refused after {dt:.2f} s: not at once"
    finally:
        w.stop()


def test_engine_core_batches_larger_while_overloaded(tmp_path: Path) -> None:
    """server.adaptiveBatching in the engine core: with 400 ms batches and 12 one-row
    requests at once, batches grow past maxBatchSize 2 (up to 6) while more than 2 wait;
    every answer is still the model's."""
    cfg = tmp_path / "worker.json"
    cfg.write_text(
        json.dumps(
            {
                "model": {"name": "mlp", "source": "python://worker_engines:poison",
                          "parameters": {"delay_ms": "400"}},
                "batching": {"maxBatchSize": 2, "maxQueueDelayMicroseconds": 0},
                "server": {"host": "127.0.0.1", "httpPort": 0, "grpcPort": 0, "metricsPort": 0,
                           "drainSeconds": 0, "frontEnds": 2,
                           "adaptiveBatching": {"maxBatchSize": 6,
                                                "maxQueueDelayMicroseconds": 0,
                                                "queueDepth": 2}},
            }
        )
    )  # fmt: skip
    w = WorkerProcess("--config", str(cfg), cwd=tmp_path)
    try:
        w.wait_ready()
        jobs = [("http" if k % 2 else "grpc", _rows(1, 100 + k)) for k in range(12)]
        with ThreadPoolExecutor(12) as pool:
            outs = list(pool.map(lambda j: _infer(w, *j), jobs))
        for (_, x), out in zip(jobs, outs, strict=True):
            np.testing.assert_allclose(out, _reference(x), rtol=1e-5, atol=1e-6)
        with urllib.request.urlopen(f"http://127.0.0.1:{w.ports['http']}/v2/models/stats") as r:
            sizes = {b["batch_size"] for b in json.load(r)["model_stats"][0]["batch_stats"]}
        assert max(sizes) > 2 and max(sizes) <= 6, sizes
    finally:
        w.stop()


def test_full_queue_is_refused_at_once_by_any_front_end(tmp_path: Path) -> None:
    """The engine core is busy (800 ms batches); beyond maxQueueSize the front ends
    answer 503 at once from the shared counters, without waiting for the core."""
    w = _start(
        tmp_path, "python://worker_engines:poison", "--model-param", "delay_ms=800",
        "--max-queue-size", "4", "--max-queue-delay-us", "0", "--max-batch-size", "1",
    )  # fmt: skip
    try:

        def send(k: int) -> tuple[float, np.ndarray | InferenceServerException]:
            t0 = time.monotonic()
            try:
                out: np.ndarray | InferenceServerException = _infer(w, "http", _rows(1, k))
            except InferenceServerException as e:
                out = e
            return time.monotonic() - t0, out

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(send, range(12)))
        refused = [(dt, r) for dt, r in results if isinstance(r, InferenceServerException)]
        served = [r for _, r in results if isinstance(r, np.ndarray)]
        assert refused and served, results
        for dt, r in refused:
            assert r.status() == "503" and "queue is full" in r.message(), r
            assert dt < 0.5, f"refused after {dt:.2f} s: not at once (a batch takes 0.8 s)"
        assert _metric(w, 'infleet_requests_total{model="mlp",outcome="rejected"') == len(refused)
    finally:
        w.stop()
