"""``builtin://encoder-base``: a BERT-base shaped encoder with mean pooling.

Inputs ``input_ids`` INT64 [seq] and optional ``attention_mask`` INT64 [seq] (1 = token,
0 = padding; all ones when omitted) -> output ``embedding`` FP32 [hidden], the mask-
weighted mean of the last layer's token states. Post-LayerNorm BERT blocks with a fused
QKV projection and ``scaled_dot_product_attention``; weights with std 0.02 (uniform) from a
fixed-seed generator (LayerNorm 1/0), as BERT initializes them.

Parameters: ``layers`` (12), ``hidden`` (768), ``heads`` (12), ``ffn`` (4*hidden),
``vocab`` (30522), ``seq`` (128), ``seed`` (0).

The same blocks run the real all-MiniLM-L6-v2 (:mod:`infleet_worker.models.minilm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from infleet_worker.engine.base import FINITE, Domain, TensorInfo
from infleet_worker.models.base import ServedModel, seeded_generator
from infleet_worker.models.params import check_known, int_param

State = tuple[torch.Tensor, ...]

# 1 = token, 0 = padding.
MASK = Domain(values=frozenset({0, 1}))


@dataclass(frozen=True)
class EncoderConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12
    normalize: bool = False  # L2-normalize the pooled embedding (sentence-transformers)

    def flops_per_token(self, seq: int) -> float:
        """Forward FLOPs per token: projections + FFN matmuls + attention scores/values."""
        dense = 2 * (4 * self.hidden * self.hidden + 2 * self.hidden * self.ffn)
        return float(self.layers * (dense + 4 * seq * self.hidden))


class Embeddings(nn.Module):
    """(input_ids, attention_mask) -> (hidden states, additive attention bias, mask)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, state: State) -> State:
        input_ids, mask = state[0], state[1]
        seq = input_ids.shape[1]
        h = self.word(input_ids) + self.position.weight[:seq] + self.token_type.weight[0]
        h = self.norm(h)
        # Half the dtype's minimum: a fully masked (padding) row stays finite, no NaN.
        keep = mask[:, None, None, :].to(h.dtype)
        bias = (1.0 - keep) * (torch.finfo(h.dtype).min / 2)
        return h, bias, mask


class EncoderLayer(nn.Module):
    """One post-LayerNorm BERT block over (h, bias, mask)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.ffn_in = nn.Linear(cfg.hidden, cfg.ffn)
        self.ffn_out = nn.Linear(cfg.ffn, cfg.hidden)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, state: State) -> State:
        h, bias, mask = state
        batch, seq, hidden = h.shape
        qkv = self.qkv(h).view(batch, seq, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        attn = attn.transpose(1, 2).reshape(batch, seq, hidden)
        h = self.attn_norm(h + self.out(attn))
        h = self.ffn_norm(h + self.ffn_out(F.gelu(self.ffn_in(h))))
        return h, bias, mask


class MeanPool(nn.Module):
    """(h, bias, mask) -> (embedding,): mean over real tokens, optionally L2-normalized."""

    def __init__(self, normalize: bool) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, state: State) -> State:
        h, mask = state[0], state[2]
        weights = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = F.normalize(pooled.float(), p=2.0, dim=-1)
        return (pooled,)


class Encoder(ServedModel):
    """Embeddings -> N encoder layers -> mean pooling, each a pipeline-splittable stage."""

    def __init__(self, cfg: EncoderConfig, seq: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seq = seq
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))
        self.pool = MeanPool(cfg.normalize)
        # Out-of-vocabulary ids crash the embedding lookup (a device-side assert on CUDA)
        # and any mask value but 0/1 poisons the pooling: both refused before batching.
        self.inputs = [
            TensorInfo("input_ids", "INT64", (seq,), domain=Domain(min=0, max=cfg.vocab - 1)),
            TensorInfo("attention_mask", "INT64", (seq,), optional=True, domain=MASK),
        ]
        self.outputs = [TensorInfo("embedding", "FP32", (cfg.hidden,), domain=FINITE)]
        self.optional_inputs = {"attention_mask": 1}
        self.flops_per_item = cfg.flops_per_token(seq) * seq

    def stages(self) -> list[nn.Module]:
        return [self.embeddings, *self.layers, self.pool]

    def example_inputs(self, batch: int) -> list[tuple[torch.Tensor, ...]]:
        ids = torch.zeros(batch, self.seq, dtype=torch.int64)
        return [(ids, torch.ones_like(ids))]

    @torch.no_grad()
    def init_random(self, seed: int) -> None:
        """BERT's initialization from a fixed-seed CPU generator (deterministic)."""
        gen = seeded_generator(seed)
        for name, param in self.named_parameters():
            if "norm" in name:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                # uniform with std 0.02 (twice as fast to draw as normal; same scale)
                param.uniform_(-0.02 * 3**0.5, 0.02 * 3**0.5, generator=gen)


def build(params: dict[str, str]) -> Encoder:
    known = {"layers", "hidden", "heads", "ffn", "vocab", "seq", "seed"}
    check_known(params, known, "encoder-base")
    hidden = int_param(params, "hidden", 768)
    heads = int_param(params, "heads", 12)
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    seq = int_param(params, "seq", 128)
    if seq > 512:
        raise ValueError(f"parameter seq={seq} must be <= 512 (position embeddings)")
    cfg = EncoderConfig(
        layers=int_param(params, "layers", 12),
        hidden=hidden,
        heads=heads,
        ffn=int_param(params, "ffn", 4 * hidden),
        vocab=int_param(params, "vocab", 30522),
    )
    with torch.device("meta"):
        model = Encoder(cfg, seq)
    model.to_empty(device="cpu")
    model.init_random(int_param(params, "seed", 0, minimum=0))
    return model
