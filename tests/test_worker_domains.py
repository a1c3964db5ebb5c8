"""Value domains at the service boundary, through the real tritonclient (HTTP and gRPC).

A small ``builtin://encoder-base`` (vocab 100) behind a long queue delay so concurrent
requests merge: an out-of-vocabulary id or a mask of 5s is refused alone with 400 /
INVALID_ARGUMENT naming the input and the position, and its would-be batch-mates get
the answers they get alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor
from worker_fixtures import ServerThread, worker_config

VOCAB = 100
SEQ = 8
PARAMS = {"layers": "1", "hidden": "32", "heads": "2", "ffn": "64", "seq": str(SEQ)}
PARAMS["vocab"] = str(VOCAB)


def tiny_encoder() -> tuple[WorkerConfig, Engine]:
    cfg = worker_config(
        name="enc",
        source="builtin://encoder-base",
        batching={"maxBatchSize": 16, "maxQueueDelayMicroseconds": 20_000},
        engine={"device": "cpu", "cudaGraphs": False},
    )
    cfg.model.parameters.update(PARAMS)
    return cfg, load_engine(cfg)


@pytest.fixture(scope="module")
def reference() -> Engine:
    """A second engine with the same seed: the answer a request gets alone."""
    return tiny_encoder()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    cfg, engine = tiny_encoder()
    with ServerThread(cfg, engine) as s:
        yield s


def http_infer(server: ServerThread, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    inputs = [httpclient.InferInput("input_ids", list(ids.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids, binary_data=True)
    if mask is not None:
        inputs.append(httpclient.InferInput("attention_mask", list(mask.shape), "INT64"))
        inputs[1].set_data_from_numpy(mask, binary_data=False)
    with httpclient.InferenceServerClient(server.http_url) as c:
        out: np.ndarray = c.infer("enc", inputs).as_numpy("embedding")
    return out


def grpc_infer(server: ServerThread, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    inputs = [grpcclient.InferInput("input_ids", list(ids.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    if mask is not None:
        inputs.append(grpcclient.InferInput("attention_mask", list(mask.shape), "INT64"))
        inputs[1].set_data_from_numpy(mask)
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        out: np.ndarray = c.infer("enc", inputs).as_numpy("embedding")
    return out


INFER = {"http": http_infer, "grpc": grpc_infer}
STATUS = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


def refusal(protocol: str, server: ServerThread, ids: np.ndarray, mask: np.ndarray | None) -> str:
    with pytest.raises(InferenceServerException) as info:
        INFER[protocol](server, ids, mask)
    assert info.value.status() == STATUS[protocol], info.value
    return str(info.value.message())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_out_of_vocabulary_and_negative_ids_are_invalid(
    server: ServerThread, protocol: str
) -> None:
    ids = np.ones((2, SEQ), np.int64)
    ids[1, 3] = VOCAB
    msg = refusal(protocol, server, ids, None)
    assert "input 'input_ids': value 100 at [1, 3] is outside [0, 99]" in msg
    ids[1, 3] = -7
    assert "input 'input_ids': value -7 at [1, 3] is outside [0, 99]" in refusal(
        protocol, server, ids, None
    )
    ids[1, 3] = VOCAB - 1  # the largest id is fine
    assert INFER[protocol](server, ids, None).shape == (2, 32)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_mask_of_fives_is_invalid(server: ServerThread, protocol: str) -> None:
    ids = np.ones((1, SEQ), np.int64)
    msg = refusal(protocol, server, ids, np.full((1, SEQ), 5, np.int64))
    assert "input 'attention_mask': value 5 at [0, 0] is not one of {0, 1}" in msg


def test_domains_show_in_metadata_and_config(server: ServerThread) -> None:
    with httpclient.InferenceServerClient(server.http_url) as c:
        meta = c.get_model_metadata("enc")
        config = c.get_model_config("enc")
    by_name = {t["name"]: t for t in meta["inputs"] + meta["outputs"]}
    assert json.loads(by_name["input_ids"]["parameters"]["domain"]) == {"min": 0, "max": 99}
    assert json.loads(by_name["attention_mask"]["parameters"]["domain"]) == {"values": [0, 1]}
    assert json.loads(by_name["embedding"]["parameters"]["domain"]) == {"finite": True}
    assert config["parameters"]["domain.input_ids"] == {"string_value": '{"min":0,"max":99}'}
    with grpcclient.InferenceServerClient(server.grpc_url) as g:
        gmeta = g.get_model_metadata("enc", as_json=True)  # parses: no unknown fields
        gconfig = g.get_model_config("enc", as_json=True)["config"]
    assert [t["name"] for t in gmeta["inputs"]] == ["input_ids", "attention_mask"]
    assert gconfig["parameters"]["domain.attention_mask"] == {"string_value": '{"values":[0,1]}'}
    assert gconfig["parameters"]["domain.embedding"] == {"string_value": '{"finite":true}'}


def _counts(server: ServerThread) -> tuple[int, int]:
    with httpclient.InferenceServerClient(server.http_url) as c:
        stats = c.get_inference_statistics("enc")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_bad_id_among_ten_good_fails_alone(server: ServerThread, reference: Engine) -> None:
    """The issue's scenario: 10 good requests and one out-of-vocabulary id, sent at once."""
    rng = np.random.default_rng(1)
    goods = [rng.integers(0, VOCAB, (1, SEQ), dtype=np.int64) for _ in range(10)]
    bad = goods[0].copy()
    bad[0, 5] = VOCAB + 50_000
    rows_before, batches_before = _counts(server)
    with ThreadPoolExecutor(11) as pool:
        futures = [pool.submit(grpc_infer, server, ids, None) for ids in goods]
        refused = pool.submit(refusal, "grpc", server, bad, None)
        answers = [f.result() for f in futures]
        assert "input 'input_ids': value 50100 at [0, 5] is outside [0, 99]" in refused.result()
    for ids, got in zip(goods, answers, strict=True):
        expected = reference.run({"input_ids": Tensor("INT64", ids)})["embedding"].array
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    rows, batches = _counts(server)
    assert rows - rows_before == 10  # the bad one never reached the batcher
    assert batches - batches_before < 10  # ...and the good ones were merged


# -- property: any mix of good and malformed requests, sent at once so they batch ------------
BAD_KINDS = {
    "id>=vocab": ("input_ids", VOCAB),
    "id<0": ("input_ids", -1),
    "mask=5": ("attention_mask", 5),
    "mask=-1": ("attention_mask", -1),
}


@dataclass(frozen=True)
class Call:
    protocol: str
    ids: np.ndarray
    mask: np.ndarray | None
    bad: str | None  # a BAD_KINDS key, or None for a good request


@st.composite
def calls(draw: st.DrawFn) -> Call:
    rows = draw(st.integers(1, 3))
    ids = np.array(draw(st.lists(st.integers(0, VOCAB - 1), min_size=rows * SEQ,
                                 max_size=rows * SEQ)), np.int64).reshape(rows, SEQ)  # fmt: skip
    mask = None
    if draw(st.booleans()):
        keep = draw(st.integers(1, SEQ))
        mask = np.zeros((rows, SEQ), np.int64)
        mask[:, :keep] = 1
    bad = draw(st.one_of(st.none(), st.sampled_from(sorted(BAD_KINDS))))
    if bad is not None:
        name, value = BAD_KINDS[bad]
        row, col = draw(st.integers(0, rows - 1)), draw(st.integers(0, SEQ - 1))
        if name == "attention_mask":
            mask = np.ones((rows, SEQ), np.int64) if mask is None else mask
            mask[row, col] = value
        else:
            ids[row, col] = value
    return Call(draw(st.sampled_from(["http", "grpc"])), ids, mask, bad)


def outcome(server: ServerThread, call: Call) -> np.ndarray | InferenceServerException:
    try:
        return INFER[call.protocol](server, call.ids, call.mask)
    except InferenceServerException as e:
        return e


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(calls(), min_size=2, max_size=8))
def test_any_mix_good_answered_bad_refused_worker_ready(
    server: ServerThread, reference: Engine, batch: list[Call]
) -> None:
    with ThreadPoolExecutor(len(batch)) as pool:
        results = list(pool.map(lambda c: outcome(server, c), batch))
    for call, got in zip(batch, results, strict=True):
        if call.bad is None:
            assert isinstance(got, np.ndarray), got
            alone = {"input_ids": Tensor("INT64", call.ids)}
            if call.mask is not None:
                alone["attention_mask"] = Tensor("INT64", call.mask)
            expected = reference.run(alone)["embedding"].array
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        else:
            assert isinstance(got, InferenceServerException), f"{call.bad} answered"
            assert got.status() == STATUS[call.protocol]
            assert f"input '{BAD_KINDS[call.bad][0]}'" in str(got.message())
    with httpclient.InferenceServerClient(server.http_url) as c:
        assert c.is_server_ready() and c.is_model_ready("enc")
