"""A real fault on the model's device: an out-of-range embedding index.

On CPU it is an ordinary error of the one guilty request (400-free path: the model
declares no domain), isolated from its batch-mates. On CUDA it is a device-side
assert that poisons the context: the worker must answer 503 (retry elsewhere) and
exit non-zero within seconds, never hang (runs when a GPU is present)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from worker_process import WorkerProcess

pytestmark = pytest.mark.timeout(120)


def _start(tmp_path: Path, device: str) -> WorkerProcess:
    w = WorkerProcess(
        "--model-source", "python://worker_engines:lookup", "--model-name", "lookup",
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--front-ends", "1", "--max-batch-size", "8", "--max-queue-delay-us", "50000",
        "--device", device, "--drain-seconds", "0",
        cwd=tmp_path,
    )  # fmt: skip
    w.wait_ready(120)
    return w


def _send(w: WorkerProcess, ids: list[int]) -> np.ndarray | InferenceServerException:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{w.ports['http']}", network_timeout=60)
    x = np.array([ids], np.int64)
    i = httpclient.InferInput("ids", list(x.shape), "INT64")
    i.set_data_from_numpy(x)
    try:
        out = c.infer("lookup", [i]).as_numpy("out")
        assert out is not None
        return out
    except InferenceServerException as e:
        return e
    finally:
        c.close()


def test_out_of_range_index_on_cpu_fails_alone(tmp_path: Path) -> None:
    w = _start(tmp_path, "cpu")
    try:
        with ThreadPoolExecutor(4) as pool:
            good = [pool.submit(_send, w, [1, 2, 3, k]) for k in range(3)]
            bad = pool.submit(_send, w, [1, 2, 3, 99])
            results = [f.result() for f in good]
            err = bad.result()
        assert isinstance(err, InferenceServerException) and err.status() == "500", err
        assert "index out of range" in err.message()
        assert all(isinstance(r, np.ndarray) for r in results), results
        assert w.proc.poll() is None  # an ordinary failure: the worker serves on
    finally:
        w.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_side_assert_exits_fast_with_503(tmp_path: Path) -> None:
    w = _start(tmp_path, "cuda")
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_send, w, [1, 2, 3, k]) for k in (0, 1)]
            futures.append(pool.submit(_send, w, [1, 2, 3, 99]))
            results = [f.result(60) for f in futures]
        for r in results:  # the whole batch: the device is gone for everyone
            assert isinstance(r, InferenceServerException), r
            assert r.status() == "503" and "retry" in r.message(), r
        assert w.proc.wait(30) == 1
        assert time.monotonic() - t0 < 30
        assert "device-side assert" in w.log() and "event=device_lost" in w.log()
    finally:
        w.stop()
