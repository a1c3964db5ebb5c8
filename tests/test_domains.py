"""Value domains: the Domain type, the vectorised checks, the wire form, the builtins'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from infleet_worker.config import TensorSpec, WorkerConfig
from infleet_worker.domains import check_inputs, domain_parameters, nonfinite_rows, violation
from infleet_worker.engine.base import FINITE, Domain, TensorInfo
from infleet_worker.engine.loader import SIGNATURE_FILE, load_engine
from infleet_worker.models.served import as_tensor_infos
from infleet_worker.protocol.errors import ErrorKind, InferError
from infleet_worker.tensors import Tensor

IDS = TensorInfo("input_ids", "INT64", (8,), domain=Domain(min=0, max=999))
MASK = TensorInfo("attention_mask", "INT64", (8,), True, Domain(values=frozenset({0, 1})))
INFOS = {i.name: i for i in (IDS, MASK)}


def ints(rows: int, fill: int = 1) -> Tensor:
    return Tensor("INT64", np.full((rows, 8), fill, dtype=np.int64))


def refused(inputs: dict[str, Tensor], infos: dict[str, TensorInfo] = INFOS) -> str:
    with pytest.raises(InferError) as info:
        check_inputs(inputs, infos)
    assert info.value.kind is ErrorKind.INVALID
    assert info.value.http_status == 400
    return info.value.message


def test_tensor_info_stays_positional_and_backward_compatible() -> None:
    old = TensorInfo("x", "FP32", (4,), True)
    assert old.optional and old.domain is None
    assert TensorInfo("x", "FP32", (4,)) == TensorInfo("x", "FP32", (4,), False, None)
    with pytest.raises(AttributeError):
        old.domain = FINITE  # type: ignore[misc]


def test_good_inputs_pass() -> None:
    check_inputs({"input_ids": ints(3, 999), "attention_mask": ints(3, 0)}, INFOS)
    check_inputs({"input_ids": ints(3, 0)}, INFOS)  # an optional input left out


def test_token_id_above_vocab_names_input_value_and_first_position() -> None:
    ids = ints(4)
    ids.array[3, 5] = 50_000
    ids.array[3, 6] = 70_000  # a later one is not the one reported
    msg = refused({"input_ids": ids})
    assert msg == "input 'input_ids': value 50000 at [3, 5] is outside [0, 999]"


def test_negative_token_id_refused() -> None:
    ids = ints(2)
    ids.array[1, 0] = -1
    assert refused({"input_ids": ids}).endswith("value -1 at [1, 0] is outside [0, 999]")


def test_mask_of_fives_refused() -> None:
    msg = refused({"input_ids": ints(1), "attention_mask": ints(1, 5)})
    assert msg == "input 'attention_mask': value 5 at [0, 0] is not one of {0, 1}"


def test_mask_value_inside_hull_of_non_run_set_refused() -> None:
    info = TensorInfo("m", "INT32", (3,), domain=Domain(values=frozenset({0, 2})))
    msg = refused({"m": Tensor("INT32", np.array([[0, 2, 1]], np.int32))}, {"m": info})
    assert "value 1 at [0, 2] is not one of {0, 2}" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_non_finite_float_input_refused(datatype: str, bad: float) -> None:
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype]
    array = np.zeros((2, 4), dtype)
    array[1, 2] = bad
    info = TensorInfo("x", datatype, (4,), domain=FINITE)  # type: ignore[arg-type]
    msg = refused({"x": Tensor(datatype, array)}, {"x": info})  # type: ignore[arg-type]
    assert msg == f"input 'x': value {float(bad)} at [1, 2] is not finite"


def test_bf16_bits_are_decoded_for_finite_and_range() -> None:
    bits = np.array([[0x3F80, 0x7FC0]], np.uint16)  # 1.0, NaN
    info = TensorInfo("x", "BF16", (2,), domain=Domain(finite=True, max=2.0))
    assert "value nan at [0, 1] is not finite" in refused({"x": Tensor("BF16", bits)}, {"x": info})
    bits = np.array([[0x3F80, 0x4040]], np.uint16)  # 1.0, 3.0
    assert "value 3 at [0, 1] is outside [-inf, 2]" in refused(
        {"x": Tensor("BF16", bits)}, {"x": info}
    )


def test_bytes_max_length() -> None:
    info = TensorInfo("text", "BYTES", (1,), domain=Domain(max_bytes=4))
    ok = np.array([[b"abcd"], [b""]], dtype=object)
    check_inputs({"text": Tensor("BYTES", ok)}, {"text": info})
    long = np.array([[b"ab"], [b"abcdef"]], dtype=object)
    msg = refused({"text": Tensor("BYTES", long)}, {"text": info})
    assert msg == "input 'text': element at [1, 0] is 6 bytes, more than maxBytes 4"


def test_no_domain_no_check() -> None:
    info = TensorInfo("x", "FP32", (2,))
    check_inputs({"x": Tensor("FP32", np.array([[np.nan, 1e30]], np.float32))}, {"x": info})
    assert violation(Tensor("FP32", np.zeros((0, 2), np.float32)), FINITE) is None


def test_nan_passes_a_range_without_finite() -> None:
    ranged = Domain(min=0, max=1)
    assert violation(Tensor("FP32", np.array([[np.nan, 0.5]], np.float32)), ranged) is None


def test_nonfinite_rows_names_output_and_row() -> None:
    out = np.ones((4, 3), np.float32)
    out[1, 2] = np.nan
    out[3, 0] = np.inf
    out[3, 1] = np.nan  # the row's first is reported
    infos = {
        "embedding": TensorInfo("embedding", "FP32", (3,), domain=FINITE),
        "raw": TensorInfo("raw", "FP32", (3,)),  # not declared finite: never reported
    }
    rows = nonfinite_rows({"embedding": Tensor("FP32", out), "raw": Tensor("FP32", out)}, infos)
    assert rows == {
        1: "output 'embedding' is not finite: nan at [2] of the row",
        3: "output 'embedding' is not finite: inf at [0] of the row",
    }
    assert nonfinite_rows({"embedding": Tensor("FP32", np.ones((2, 3), np.float32))}, infos) == {}


def test_domain_rules_refuse_impossible_declarations() -> None:
    with pytest.raises(ValueError, match="min"):
        Domain(min=3, max=1)
    with pytest.raises(ValueError, match="empty"):
        Domain(values=frozenset())
    with pytest.raises(ValueError, match="tensor 'x': finite applies to floating-point"):
        TensorInfo("x", "INT64", (1,), domain=FINITE)
    with pytest.raises(ValueError, match="maxBytes applies to BYTES"):
        TensorInfo("x", "FP32", (1,), domain=Domain(max_bytes=3))
    with pytest.raises(ValueError, match="BYTES tensors take only maxBytes"):
        TensorInfo("x", "BYTES", (1,), domain=Domain(min=0))


def test_wire_round_trip_and_config_parameters() -> None:
    domain = Domain(min=0, max=30521, values=frozenset({0, 1}), max_bytes=None)
    assert domain.to_wire() == {"min": 0, "max": 30521, "values": [0, 1]}
    assert Domain.from_wire(domain.to_wire()) == domain
    params = domain_parameters([IDS, MASK, TensorInfo("y", "FP32", (1,))])
    assert params == {
        "domain.input_ids": {"string_value": '{"min":0,"max":999}'},
        "domain.attention_mask": {"string_value": '{"values":[0,1]}'},
    }
    with pytest.raises(ValueError, match="unknown domain fields"):
        Domain.from_wire({"minimum": 0})


def test_signature_file_and_config_carry_domains_camel_case() -> None:
    wire = [
        {"name": "ids", "datatype": "INT32", "shape": [4], "domain": {"min": 0, "max": 9}},
        {"name": "text", "datatype": "BYTES", "shape": [1], "domain": {"maxBytes": 100}},
        {"name": "x", "datatype": "FP16", "shape": [2], "domain": {"finite": True}},
    ]
    from_file = as_tensor_infos(json.loads(json.dumps(wire)))
    from_config = as_tensor_infos([TensorSpec.model_validate(w) for w in wire])
    assert from_file == from_config
    assert [i.domain for i in from_file] == [Domain(0, 9), Domain(max_bytes=100), FINITE]


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"datatype": "INT64", "domain": {"min": 5, "max": 1}}, "min must be <= max (5 > 1)"),
        ({"datatype": "INT64", "domain": {"finite": True}}, "finite applies to float"),
        ({"datatype": "FP32", "domain": {"maxBytes": 8}}, "maxBytes applies to BYTES"),
        ({"datatype": "BYTES", "domain": {"values": [1]}}, "BYTES tensors take only maxBytes"),
        ({"datatype": "BYTES", "domain": {"maxBytes": 0}}, "greater than or equal to 1"),
        ({"datatype": "INT64", "domain": {"values": []}}, "at least 1 item"),
        ({"datatype": "INT64", "domain": {"below": 3}}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses_bad_domains(wire: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TensorSpec.model_validate({"name": "t", "shape": [1], **wire})


def test_builtins_declare_their_domains() -> None:
    from infleet_worker.models import builtin_factory

    small = {"layers": "1", "hidden": "16", "heads": "2", "seq": "4", "vocab": "50"}
    encoder = builtin_factory("encoder-base")(small)
    assert [i.domain for i in encoder.inputs] == [Domain(min=0, max=49), MASK.domain]
    assert [o.domain for o in encoder.outputs] == [FINITE]
    for name in ("mlp", "synthetic"):
        model = builtin_factory(name)({"width": "8"})
        assert [i.domain for i in model.inputs] == [FINITE], name
        assert [o.domain for o in model.outputs] == [FINITE], name


def _tiny_config(source: str, **model: object) -> WorkerConfig:
    doc = {"model": {"name": "m", "source": source, **model}, "engine": {"device": "cpu"}}
    return WorkerConfig.model_validate({**doc, "batching": {"maxBatchSize": 4}})


def test_file_model_domains_from_signature_file(tmp_path: Path) -> None:
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [8], "domain": {"finite": True}}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [8], "domain": {"finite": True}}],
    }
    path = tmp_path / "relu.pt"
    torch.jit.save(torch.jit.script(nn.ReLU()), str(path), {SIGNATURE_FILE: json.dumps(signature)})
    engine = load_engine(_tiny_config(f"file://{path}"))
    assert [i.domain for i in engine.inputs + engine.outputs] == [FINITE, FINITE]


def test_python_model_declares_domains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "domain_models.py").write_text(
        "from torch import nn\n"
        "from infleet_worker.engine.base import Domain, TensorInfo\n"
        "class Lookup(nn.Module):\n"
        "    inputs = [TensorInfo('ids', 'INT64', (4,), domain=Domain(min=0, max=9))]\n"
        "    outputs = [TensorInfo('h', 'FP32', (4, 2))]\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = nn.Embedding(10, 2)\n"
        "    def forward(self, ids):\n"
        "        return self.emb(ids)\n"
        "def build(params):\n"
        "    return Lookup()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    engine = load_engine(_tiny_config("python://domain_models:build"))
    infos = {i.name: i for i in engine.inputs}
    assert infos["ids"].domain == Domain(min=0, max=9)
    ids = np.array([[0, 9, 10, 3]], np.int64)
    with pytest.raises(InferError, match=r"input 'ids': value 10 at \[0, 2\] is outside \[0, 9\]"):
        check_inputs({"ids": Tensor("INT64", ids)}, infos)
