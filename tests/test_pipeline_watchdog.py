"""The pipeline's watchdog and bounded shutdown, on CPU "devices".

A stage that blocks forever (here: on an Event the test only sets at the end) must fail
its batch within the configured bound with an error naming the stage, fail later
batches at once, and leave ``close()`` returning within its bound: no configuration
can hang a worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import EngineError, TensorInfo
from infleet_worker.engine.pipeline.build import build_pipeline
from infleet_worker.engine.pipeline.runner import STAGE_TIMEOUT_ENV, default_stage_timeout
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

WIDTH = 8
BOUND = 0.5


class Block(nn.Module):
    """Blocks every call on a row whose first value is 7 until ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 7.0).any()):
            self.release.wait()
        return x


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let the stuck stage thread finish once the test is over


def engine(model: nn.Module, stages: int, micro: int = 2) -> TorchEngine:
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": "python://x:y"},
            "engine": {"device": "cpu", "pipelineParallel": stages, "microBatches": micro},
            "batching": {"maxBatchSize": 8},
        }
    )
    view = ServedView(
        model, [TensorInfo("x", "FP32", (WIDTH,))], [TensorInfo("y", "FP32", (WIDTH,))]
    )
    return build_pipeline(cfg, view, torch.device("cpu"), stage_timeout=BOUND)


def rows(first: float) -> dict[str, Tensor]:
    x = np.ones((4, WIDTH), np.float32)
    x[3, 0] = first
    return {"x": Tensor("FP32", x)}


def test_a_stage_that_blocks_forever_fails_its_batch_within_the_bound(
    release: threading.Event,
) -> None:
    pipe = engine(nn.Sequential(nn.Identity(), Block(release), nn.Identity()), 3)
    try:
        assert pipe.run(rows(1.0))["y"].array.shape == (4, WIDTH)  # healthy before
        start = time.monotonic()
        with pytest.raises(
            EngineError,
            match=r"pipeline stage 2 of 3 \(cpu, 1 block\(s\): Block\) made no progress for "
            r"0\.5s on micro-batch 2 of 2; the pipeline is stuck",
        ):
            pipe.run(rows(7.0))  # row 3 lies in micro-batch 2
        assert BOUND <= time.monotonic() - start < BOUND + 1.0
        assert "stage 2 of 3" in str(pipe.failure())
        start = time.monotonic()
        with pytest.raises(EngineError, match=r"stage 2 of 3 .* stuck"):
            pipe.run(rows(1.0))  # later batches fail at once, without new work queued
        assert time.monotonic() - start < 0.2
    finally:
        start = time.monotonic()
        pipe.close()  # the stuck stage is not waited for; the others stop at once
        assert time.monotonic() - start < 1.0


def test_close_is_bounded_with_a_stage_stuck(release: threading.Event) -> None:
    pipe = engine(nn.Sequential(Block(release), nn.Identity()), 2, micro=1)
    caller_error: list[BaseException] = []

    def serve() -> None:
        try:
            pipe.run(rows(7.0))
        except BaseException as exc:
            caller_error.append(exc)

    caller = threading.Thread(target=serve)
    caller.start()
    time.sleep(0.1)
    start = time.monotonic()
    pipe.runner.close(timeout=0.3)
    assert time.monotonic() - start < 0.8
    caller.join(2)
    assert not caller.is_alive()  # the batch in flight failed instead of hanging
    assert caller_error and "shut down mid-batch" in str(caller_error[0])
    release.set()
    stages = pipe.runner.stages
    for stage in stages:
        stage.thread.join(2)
    assert not any(s.thread.is_alive() for s in stages)


def test_stage_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STAGE_TIMEOUT_ENV, raising=False)
    assert default_stage_timeout() == 60.0
    monkeypatch.setenv(STAGE_TIMEOUT_ENV, "2.5")
    assert default_stage_timeout() == 2.5
    for bad in ("0", "soon"):
        monkeypatch.setenv(STAGE_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=STAGE_TIMEOUT_ENV):
            default_stage_timeout()
