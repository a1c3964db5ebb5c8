"""Cache keys: stable, and sensitive to every field that changes the answer."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from infleet_worker.cache.keys import UnhashableRequest, output_key, row_keys
from infleet_worker.tensors import InferRequest, Tensor


def _req(**kw: object) -> InferRequest:
    base: dict[str, Any] = {
        "model_name": "enc",
        "model_version": "1",
        "inputs": {
            "a": Tensor("FP32", np.arange(6, dtype=np.float32).reshape(2, 3)),
            "b": Tensor("BYTES", np.array([b"x", b"yz"], dtype=object)),
        },
        "requested_outputs": ["emb", "norm"],
    }
    base.update(kw)
    return InferRequest(**base)


def test_key_is_stable_and_namespaced() -> None:
    k1 = output_key("ns", _req())
    assert k1 == output_key("ns", _req())
    assert k1.startswith("ns:o:enc:1:")
    assert len(k1.rsplit(":", 1)[1]) == 64
    assert output_key("other", _req()) != k1


def test_key_ignores_input_dict_order_and_requested_order() -> None:
    r = _req()
    swapped = _req(inputs=dict(reversed(list(r.inputs.items()))))
    assert list(swapped.inputs) != list(r.inputs)
    assert output_key("ns", swapped) == output_key("ns", r)
    assert output_key("ns", _req(requested_outputs=["norm", "emb"])) == output_key("ns", r)


def test_key_ignores_memory_layout_and_byte_order() -> None:
    r = _req()
    arr = r.inputs["a"].array
    fortran = _req(inputs={**r.inputs, "a": Tensor("FP32", np.asfortranarray(arr))})
    big = _req(inputs={**r.inputs, "a": Tensor("FP32", arr.astype(">f4"))})
    assert output_key("ns", fortran) == output_key("ns", r) == output_key("ns", big)


def _variants() -> dict[str, InferRequest]:
    r = _req()
    a = r.inputs["a"].array
    return {
        "model": _req(model_name="enc2"),
        "version": _req(model_version="2"),
        "requested_none": _req(requested_outputs=None),
        "requested_subset": _req(requested_outputs=["emb"]),
        "input_name": _req(inputs={"a2": r.inputs["a"], "b": r.inputs["b"]}),
        "datatype": _req(inputs={**r.inputs, "a": Tensor("INT32", a.view(np.int32))}),
        "shape": _req(inputs={**r.inputs, "a": Tensor("FP32", a.reshape(3, 2))}),
        "value": _req(inputs={**r.inputs, "a": Tensor("FP32", a + 1)}),
        "extra_input": _req(inputs={**r.inputs, "c": Tensor("BOOL", np.array([True, False]))}),
        "bytes_split": _req(
            inputs={**r.inputs, "b": Tensor("BYTES", np.array([b"xy", b"z"], dtype=object))}
        ),
        "bytes_value": _req(
            inputs={**r.inputs, "b": Tensor("BYTES", np.array([b"x", b"yy"], dtype=object))}
        ),
        "bf16_vs_fp16": _req(
            inputs={**r.inputs, "c": Tensor("BF16", np.array([1, 2], dtype=np.uint16))}
        ),
        "fp16_vs_bf16": _req(
            inputs={
                **r.inputs,
                "c": Tensor("FP16", np.array([1, 2], dtype=np.uint16).view(np.float16)),
            }
        ),
    }


def test_every_field_changes_the_key() -> None:
    keys = {"base": output_key("ns", _req())}
    for name, req in _variants().items():
        keys[name] = output_key("ns", req)
    assert len(set(keys.values())) == len(keys), keys


def test_requested_outputs_none_differs_from_every_list() -> None:
    assert output_key("ns", _req(requested_outputs=None)) != output_key(
        "ns", _req(requested_outputs=[])
    )


def test_row_keys_per_row() -> None:
    ids = np.array([[1, 2], [3, 4], [1, 2]], dtype=np.int64)
    r = InferRequest("enc", "1", {"ids": Tensor("INT64", ids)})
    keys = row_keys("ns", r)
    assert len(keys) == 3
    assert keys[0] == keys[2] != keys[1]
    assert keys[0].startswith("ns:e:enc:1:")
    # a row's key does not depend on its neighbours or position
    alone = InferRequest("enc", "1", {"ids": Tensor("INT64", ids[1:2])})
    assert row_keys("ns", alone) == [keys[1]]
    # differs from the output key of the same single-row request
    assert output_key("ns", alone) != keys[1]
    # version and requested outputs are in every row key
    v2 = InferRequest("enc", "2", {"ids": Tensor("INT64", ids)})
    assert set(row_keys("ns", v2)).isdisjoint(keys)
    req_out = InferRequest("enc", "1", {"ids": Tensor("INT64", ids)}, requested_outputs=["e"])
    assert set(row_keys("ns", req_out)).isdisjoint(keys)


def test_row_keys_of_1d_and_bytes_inputs() -> None:
    r = InferRequest(
        "enc",
        "1",
        {
            "x": Tensor("FP32", np.array([1.0, 2.0, 1.0], dtype=np.float32)),
            "s": Tensor("BYTES", np.array([b"a", b"b", b"a"], dtype=object)),
        },
    )
    keys = row_keys("ns", r)
    assert keys[0] == keys[2] != keys[1]


def test_row_keys_need_a_common_batch_dim() -> None:
    r = InferRequest(
        "enc",
        "1",
        {"x": Tensor("FP32", np.zeros((2, 3), np.float32)), "y": Tensor("FP32", np.zeros(3))},
    )
    with pytest.raises(UnhashableRequest):
        row_keys("ns", r)


def test_unhashable_bytes_element() -> None:
    r = _req(inputs={"b": Tensor("BYTES", np.array([1, 2], dtype=object))})
    with pytest.raises(UnhashableRequest):
        output_key("ns", r)


def test_str_and_bytes_elements_agree() -> None:
    a = _req(inputs={"b": Tensor("BYTES", np.array([b"h\xc3\xa9"], dtype=object))})
    b = _req(inputs={"b": Tensor("BYTES", np.array(["hé"], dtype=object))})
    assert output_key("ns", a) == output_key("ns", b)


def test_key_does_not_mutate_request() -> None:
    r = _req()
    before = copy.deepcopy(r)
    output_key("ns", r)
    row_keys("ns", r)
    assert r.inputs.keys() == before.inputs.keys()
    for k in r.inputs:
        assert np.array_equal(r.inputs[k].array, before.inputs[k].array)


def test_key_format_is_pinned() -> None:
    """Workers of different builds share one Redis: the encoding must not drift silently.

    Changing it is fine only together with a new KEY_FORMAT tag (old entries then miss).
    """
    assert output_key("ns", _req()) == (
        "ns:o:enc:1:1aa475f60741f4c855a0877dc7b491b2cfe6be7621be434dbca93441d0b6acb0"
    )
