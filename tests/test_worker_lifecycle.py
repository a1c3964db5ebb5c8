"""Drain and shutdown (in-process and as a real ``infleet-worker`` under SIGTERM), CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from infleet_worker.cli import build_config, build_parser
from worker_engines import IN_FEATURES, MLPEngine
from worker_fixtures import ServerThread, worker_config
from worker_process import WorkerProcess

TESTS = Path(__file__).parent


def http_ready(url: str) -> int:
    try:
        return urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_in_process_drain_sequence() -> None:
    engine = MLPEngine(delay_s=0.05)
    cfg = worker_config(server={"drainSeconds": 0.6})
    with ServerThread(cfg, engine) as s:
        assert s.worker is not None
        x = np.ones((1, IN_FEATURES), np.float32)
        with ThreadPoolExecutor(4) as pool:

            def send() -> object:
                with httpclient.InferenceServerClient(s.http_url, network_timeout=30) as c:
                    i = httpclient.InferInput("input", [1, IN_FEATURES], "FP32")
                    i.set_data_from_numpy(x)
                    return c.infer("mlp", [i])

            before = [pool.submit(send) for _ in range(6)]
            time.sleep(0.02)
            drained = s.call_soon(s.worker.drain())
            time.sleep(0.05)
            assert http_ready(s.http_url) == 503  # not Ready at once
            with grpcclient.InferenceServerClient(s.grpc_url) as g:
                assert not g.is_server_ready() and g.is_server_live()
            body = urllib.request.urlopen(s.metrics_url, timeout=5).read().decode()
            assert 'infleet_ready{model="mlp",version="1"} 0.0' in body
            during = send()  # still served inside the drain window
            assert during.as_numpy("output").shape == (1, 8)  # type: ignore[attr-defined]
            drained.result(10)
            for f in before:
                f.result(10)
            with pytest.raises(InferenceServerException) as err:
                send()
            assert err.value.status() == "503" and "shutting down" in err.value.message()


def _start_cli(tmp_path: Path, *extra: str) -> WorkerProcess:
    return WorkerProcess(*extra, cwd=tmp_path)


@pytest.mark.slow
def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    proc = _start_cli(
        tmp_path,
        "--model-source", "python://worker_engines:slow_mlp",
        "--model-name", "mlp",
        "--model-param", "delay_ms=20",
        "--host", "127.0.0.1",
        "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--drain-seconds", "1",
        "--max-batch-size", "8",
    )  # fmt: skip
    try:
        ports = proc.wait_ready()
        http_url, grpc_url = f"127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"
        assert http_ready(http_url) == 200
        signalled = threading.Event()
        stop = threading.Event()
        outcomes: list[tuple[bool, str]] = []  # (sent before the signal, outcome)
        lock = threading.Lock()

        def client(k: int) -> None:
            use_grpc = k % 2 == 1
            while not stop.is_set():
                x = np.full((1, IN_FEATURES), k, np.float32)
                before = not signalled.is_set()
                try:
                    if use_grpc:
                        with grpcclient.InferenceServerClient(grpc_url) as g:
                            i = grpcclient.InferInput("input", [1, IN_FEATURES], "FP32")
                            i.set_data_from_numpy(x)
                            g.infer("mlp", [i], client_timeout=30)
                    else:
                        with httpclient.InferenceServerClient(http_url, network_timeout=30) as c:
                            i = httpclient.InferInput("input", [1, IN_FEATURES], "FP32")
                            i.set_data_from_numpy(x)
                            c.infer("mlp", [i])
                    outcome = "ok"
                except InferenceServerException as e:
                    outcome = f"{e.status()} {e.message()}"
                except Exception as e:  # connection refused once the server is gone
                    outcome = f"conn {type(e).__name__}"
                with lock:
                    outcomes.append((before, outcome))
                if outcome != "ok":
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        signalled.set()
        proc.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()  # not Ready within a second (the signal is asynchronous)
        while http_ready(http_url) != 503:
            assert time.monotonic() - t0 < 1.0, "still Ready 1 s after SIGTERM"
            time.sleep(0.01)
        rc = proc.proc.wait(timeout=60)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        proc.stop()
    time.sleep(0.2)  # the log pump drains the last lines
    log = proc.log()
    assert rc == 0, log
    before = [o for b, o in outcomes if b]
    after = [o for b, o in outcomes if not b]
    assert len(before) > 20
    assert all(o == "ok" for o in before), [o for o in before if o != "ok"][:5]
    assert any(o == "ok" for o in after)  # served during the drain window
    # After the signal: served, refused (503 / UNAVAILABLE), or - for an RPC that races
    # the gRPC server's final stop - CANCELLED by grpc core; never a 5xx from the worker.
    refused = ("503", "StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "conn")
    bad = [o for o in after if o != "ok" and not o.startswith(refused)]
    assert not bad, bad[:5]
    for event in ("listening", "ready", "drain", "shut down"):
        assert event in log, log


@pytest.mark.slow
def test_cli_model_load_failure_exits_1(tmp_path: Path) -> None:
    proc = _start_cli(
        tmp_path, "--model-source", "python://worker_engines:broken", "--log-format", "json"
    )
    _, err = proc.proc.communicate(timeout=60)
    assert proc.proc.returncode == 1, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "model_load_failed"]
    assert failed and "this model cannot load" in failed[0]["msg"]


def test_cli_config_file_env_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    path.write_text(json.dumps({
        "model": {"name": "m", "source": "builtin://mlp", "parameters": {"width": "64"}},
        "server": {"httpPort": 9000, "grpc_port": 9001},
        "batching": {"maxBatchSize": 4},
    }))  # fmt: skip
    args = build_parser().parse_args(["--grpc-port", "7001", "--max-queue-delay-us", "10"])
    env = {"INFLEET_WORKER_CONFIG": str(path), "INFLEET_HTTP_PORT": "8100",
           "INFLEET_METRICS_PORT": "8102", "INFLEET_GRPC_PORT": "8101"}  # fmt: skip
    cfg = build_config(args, env)
    assert (cfg.server.http_port, cfg.server.grpc_port, cfg.server.metrics_port) == (
        8100, 7001, 8102,
    )  # fmt: skip
    assert cfg.model.parameters == {"width": "64"} and cfg.batching.max_batch_size == 4
    assert cfg.batching.max_queue_delay_microseconds == 10
    args = build_parser().parse_args(
        ["--model-source", "python://worker_engines:slow_mlp", "--redis-url", "redis://r:6379/0"]
    )
    cfg = build_config(args, {})
    assert cfg.model.name == "slow_mlp" and cfg.cache.mode.value == "output"
    with pytest.raises(ValueError):
        build_config(build_parser().parse_args([]), {})


@pytest.mark.slow
def test_cli_exits_1_when_the_engine_process_dies(tmp_path: Path) -> None:
    """The model runs in the engine core (default); if it dies the pod must not stay Ready."""
    proc = _start_cli(
        tmp_path,
        "--model-source", "python://worker_engines:mlp", "--model-name", "mlp",
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
    )  # fmt: skip
    try:
        ports = proc.wait_ready()
        assert http_ready(f"127.0.0.1:{ports['http']}") == 200
        (engine_pid,) = proc.children("engine_core")
        os.kill(engine_pid, signal.SIGKILL)
        assert proc.proc.wait(30) == 1
    finally:
        proc.stop()
    time.sleep(0.2)  # the log pump drains the last lines
    died = [line for line in proc.lines if "event=engine_died" in line]
    assert died and "exit code -9" in died[0], proc.log()


def test_engine_thread_flag_keeps_the_model_in_process() -> None:
    source = ["--model-source", "builtin://mlp"]
    assert build_config(build_parser().parse_args(source), {}).server.engine_process
    cfg = build_config(build_parser().parse_args([*source, "--engine-thread"]), {})
    assert not cfg.server.engine_process
