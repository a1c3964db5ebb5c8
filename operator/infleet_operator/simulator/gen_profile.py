"""The ``generate`` section of a profile: how fast one replica prefills and decodes.

An engine step decodes one token for each of ``d`` running sequences and prefills
``p`` prompt tokens; it takes ``decode_table(d) + p x prefill_seconds_per_token``.
``decode_table``: seconds per step with ``d`` sequences decoding, measured as the
inter-token latency clients see at ``d`` concurrent streams (so the serving layer's
cost, and a speculative draft's speed-up, are in it). KV capacity in tokens bounds
the tokens the running sequences hold (prompt + generated). JSON::

    "generate": {"decode_table": [[1, 0.004], [4, 0.0061]],
                 "prefill_seconds_per_token": 2.1e-05,
                 "kv_capacity_tokens": 65536, "block_size": 16}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Assumed when a profile has no generate section: a small model on one mid-range GPU.
DEFAULT_DECODE_TABLE = ((1, 0.012), (8, 0.014), (32, 0.02), (128, 0.04))


@dataclass(frozen=True)
class GenerateProfile:
    decode_table: tuple[tuple[int, float], ...] = DEFAULT_DECODE_TABLE
    prefill_seconds_per_token: float = 5e-5
    kv_capacity_tokens: int = 262_144
    block_size: int = 16

    def __post_init__(self) -> None:
        if not self.decode_table or any(n < 1 or s <= 0 for n, s in self.decode_table):
            raise ValueError("generate.decode_table needs rows [sequences >= 1, seconds > 0]")
        if self.kv_capacity_tokens < self.block_size or self.block_size < 1:
            raise ValueError("generate: kv_capacity_tokens must hold at least one block")

    def decode_seconds(self, sequences: int) -> float:
        """Step time with ``sequences`` decoding: linear between rows, and past the last
        along the last two (never falling)."""
        ns = [n for n, _ in self.decode_table]
        ss = [s for _, s in self.decode_table]
        n = max(sequences, 1)
        if n <= ns[-1] or len(ns) == 1:
            return float(np.interp(n, ns, ss))
        slope = max(0.0, (ss[-1] - ss[-2]) / (ns[-1] - ns[-2]))
        return ss[-1] + slope * (n - ns[-1])

    def step_seconds(self, decodes: int, prefill_tokens: int) -> float:
        return self.decode_seconds(decodes) + prefill_tokens * self.prefill_seconds_per_token

    def tokens_per_second(self, sequences: int) -> float:
        """Generated tokens/s of one replica decoding ``sequences`` at once."""
        return sequences / self.decode_seconds(sequences)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decode_table": [[n, round(s, 7)] for n, s in self.decode_table],
            "prefill_seconds_per_token": round(self.prefill_seconds_per_token, 9),
            "kv_capacity_tokens": self.kv_capacity_tokens,
            "block_size": self.block_size,
        }


def generate_from_dict(data: Mapping[str, Any]) -> GenerateProfile:
    table = tuple(sorted((int(n), float(s)) for n, s in data.get("decode_table") or []))
    base = GenerateProfile()
    return GenerateProfile(
        decode_table=table or base.decode_table,
        prefill_seconds_per_token=float(
            data.get("prefill_seconds_per_token", base.prefill_seconds_per_token)
        ),
        kv_capacity_tokens=int(data.get("kv_capacity_tokens", base.kv_capacity_tokens)),
        block_size=int(data.get("block_size", base.block_size)),
    )
