"""Speculative decoding: tokens/s with a draft that agrees often, one that rarely
agrees, and none, on the same target in the same run; acceptance rate and tokens per
target step beside them.

The target is a builtin://llama whose later layers are damped towards identity (their
attention and MLP output projections scaled by ``--damp``), so a draft made of its
first layers (draft.first_layers: same embedding, norm and head) agrees often; the
disagreeing draft is an unrelated random model of one layer. Greedy decoding by
default, so every configuration must produce the same tokens (checked);
``--temperature`` > 0 samples (unseeded: seeded requests never speculate) through
rejection sampling instead. Closed loop: ``--batch``
sequences decode together, ``--tokens`` each; every run is repeated ``--rounds``
times interleaved with the others, and its best counts.

    PYTHONPATH=e2e:bench:tests .venv/bin/python bench/speculative.py          # ~1 min, CPU
    ... bench/speculative.py --device cuda --layers 16 --hidden 2048 --batch 8
"""

from __future__ import annotations

import argparse
import time

import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.config import llama_from_params
from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.draft import first_layers
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.sequence import SamplingParams
from infleet_worker.generate.speculative import SpeculativeDecoder
from infleet_worker.generate.weights import random_llama


def make_core(a: argparse.Namespace) -> EngineCore:
    params = {
        "layers": str(a.layers),
        "hidden": str(a.hidden),
        "intermediate": str(a.hidden * 8 // 3),
        "heads": str(max(4, a.hidden // 64)),
        "kvHeads": str(max(2, a.hidden // 256)),
        "maxModelLen": "1024",
        "prefixCaching": "false",  # every setup computes its prompts (a new draft's cache)
    }
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "target", "source": "builtin://llama", "parameters": params},
            "engine": {"device": a.device, "warmup": False, "cudaGraphs": False},
            "batching": {"maxBatchSize": max(16, a.batch)},
        }
    )
    core = build_core(cfg)
    with torch.no_grad():
        for layer in core.model.model.layers[a.draft_layers :]:
            layer.self_attn.o_proj.weight.mul_(a.damp)  # type: ignore[union-attr]
            layer.mlp.down_proj.weight.mul_(a.damp)  # type: ignore[union-attr]
    return core


def unrelated_draft(core: EngineCore) -> LlamaForCausalLM:
    cfg = llama_from_params({"layers": "1", "hidden": "64", "seed": "7"})
    p = next(core.model.parameters())
    return random_llama(cfg, p.dtype, p.device)


def run(core: EngineCore, a: argparse.Namespace) -> tuple[float, list[list[int]]]:
    prompts = [[1 + (i * 37 + j * 11) % 250 for j in range(32)] for i in range(a.batch)]
    params = SamplingParams(max_tokens=a.tokens, temperature=a.temperature, ignore_eos=True)
    outs: list[list[int]] = [[] for _ in prompts]
    for i, p in enumerate(prompts):
        core.add_sequence(core.make_sequence(p, params), lambda o, i=i: outs[i].append(o.token_id))
    t0 = time.perf_counter()
    with torch.inference_mode():
        while core.has_work:
            core.step()
    if core.runner.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--draft-layers", type=int, default=1)
    ap.add_argument("--damp", type=float, default=0.01)
    ap.add_argument("-k", type=int, default=4, help="draft tokens per step (max)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--temperature", type=float, default=0.0, help="> 0: unseeded sampling (rejection sampling)"
    )
    a = ap.parse_args()
    core = make_core(a)
    agree = first_layers(core.model, a.draft_layers)
    other = unrelated_draft(core)
    setups: dict[str, tuple[LlamaForCausalLM | None, bool]] = {
        "no draft": (None, False),
        f"first {a.draft_layers} layer(s), agrees often": (agree, True),
        "unrelated, rarely agrees (adaptive k)": (other, True),
        f"unrelated, rarely agrees (fixed k={a.k})": (other, False),
    }
    best: dict[str, float] = {}
    stats: dict[str, str] = {}
    reference: list[list[int]] | None = None
    run(core, a)  # warm-up
    for _ in range(a.rounds):
        for name, (draft, adaptive) in setups.items():
            core.speculative = None
            spec = None
            if draft is not None:
                spec = SpeculativeDecoder(core, draft, a.k, adaptive=adaptive)
                core.speculative = spec
            wall, outs = run(core, a)
            reference = reference or outs
            if a.temperature == 0:
                assert outs == reference, f"{name}: greedy tokens differ from plain decoding"
            best[name] = min(best.get(name, wall), wall)
            if spec is not None:
                s = spec.stats
                stats[name] = f"{s.acceptance_rate:.2f} | {s.tokens_per_step:.2f}"
    tokens = a.batch * a.tokens
    base = tokens / best["no draft"]
    print(
        f"target: {a.layers} layers, hidden {a.hidden}, later layers x{a.damp}; "
        f"batch {a.batch}, {a.tokens} tokens each, k <= {a.k}, temperature "
        f"{a.temperature}, {a.device}"
    )
    print("| draft | tokens/s | speed-up | acceptance | tokens / target step |")
    print("|---|---|---|---|---|")
    for name in setups:
        rate = tokens / best[name]
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {stats.get(name, '- | -')} |")


if __name__ == "__main__":
    main()
