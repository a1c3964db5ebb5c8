"""Generation benchmark: infleet's paged, continuously batched engine against a
static-batch Hugging Face ``generate`` loop with the same weights, in the same run.

Closed loop: C clients, each sends its next request when the last one finished
(4 requests per client by default); prompt and output lengths vary per request (seeded), so a
static batch runs as long as its longest member. Each side runs ``--rounds`` times,
interleaved with the other, and its best run counts. Prints output tokens/s and
TTFT / ITL P50 / P99 at each concurrency, then the prefix-cache speed-up on
requests sharing a long system prompt.

    PYTHONPATH=worker python bench/generate.py                       # tiny, CPU, ~1 min
    PYTHONPATH=worker python bench/generate.py --preset 1b --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.engine import GenerateEngine
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.sequence import SamplingParams


@dataclass
class Result:
    tokens: int = 0
    wall: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    def rate(self) -> float:
        return self.tokens / self.wall

    def row(self, name: str, conc: int) -> str:
        def pct(xs: list[float], q: float) -> float:
            xs = sorted(xs)
            return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

        return (
            f"| {name} | {conc} | {self.tokens / self.wall:,.0f} | {pct(self.ttft, 0.5):.1f} | "
            f"{pct(self.ttft, 0.99):.1f} | {pct(self.itl, 0.5):.1f} | {pct(self.itl, 0.99):.1f} |"
        )


def workload(
    n: int, vocab: int, seed: int, max_prompt: int, mean_out: int, lengths: str
) -> list[tuple[list[int], int]]:
    """Prompts uniform in [16, max_prompt]; outputs exponential with mean ``mean_out``
    (clipped to [4, 8 x mean]: chat answers are long-tailed) or uniform in [16, 2 x mean]."""
    rng = random.Random(seed)

    def out_len() -> int:
        if lengths == "uniform":
            return rng.randint(16, 2 * mean_out)
        return max(4, min(8 * mean_out, round(rng.expovariate(1 / mean_out))))

    return [
        ([rng.randrange(vocab) for _ in range(rng.randint(16, max_prompt))], out_len())
        for _ in range(n)
    ]


def worker_config(args: argparse.Namespace, conc: int, **params: str) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {
                "name": "bench",
                "source": "builtin://llama",
                "parameters": {"preset": args.preset, **params},
            },
            "engine": {"device": args.device, "precision": args.precision},
            "batching": {"maxBatchSize": max(conc, 1)},
        }
    )


async def run_engine(
    engine: GenerateEngine, reqs: list[tuple[list[int], int]], conc: int
) -> Result:
    res = Result()
    queue = list(reversed(reqs))

    async def client() -> None:
        while queue:
            prompt, n = queue.pop()
            t0 = last = time.perf_counter()
            first = True
            async for out in engine.generate(
                prompt, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
            ):
                now = time.perf_counter()
                (res.ttft if first else res.itl).append(now - (t0 if first else last))
                first, last = False, now
                res.tokens += out.token_id is not None

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    res.wall = time.perf_counter() - start
    return res


def hf_model(engine: GenerateEngine) -> Any:
    """transformers' LlamaForCausalLM holding exactly the engine's weights."""
    import transformers

    c = engine.core.model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
        max_position_embeddings=c.max_positions, rope_theta=c.rope_theta, rms_norm_eps=c.rms_eps,
        tie_word_embeddings=c.tie_embeddings, pad_token_id=0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(hf_cfg)
    model.load_state_dict(engine.core.model.state_dict(), strict=False)
    p = next(engine.core.model.parameters())
    return model.to(device=p.device, dtype=p.dtype).eval()


class StepClock:
    """A logits processor that only notes the time of every decoding step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


@torch.inference_mode()
def run_static(model: Any, reqs: list[tuple[list[int], int]], conc: int) -> Result:
    """Batches of `conc` requests, left-padded, each run to its longest member's length."""
    import transformers

    res = Result()
    dev = next(model.parameters()).device
    start = time.perf_counter()
    for i in range(0, len(reqs), conc):
        batch = reqs[i : i + conc]
        width = max(len(p) for p, _ in batch)
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in batch], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in batch], device=dev)
        clock = StepClock()
        t0 = time.perf_counter()
        model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max(n for _, n in batch),
            min_new_tokens=max(n for _, n in batch), do_sample=False, pad_token_id=0,
            logits_processor=transformers.LogitsProcessorList([clock]),
        )  # fmt: skip
        for _, n in batch:  # each request's tokens arrive with the batch's steps
            res.ttft.append(clock.times[0] - t0)
            res.itl.extend(
                b - a for a, b in zip(clock.times[: n - 1], clock.times[1:n], strict=True)
            )
            res.tokens += n
        # a client sees its answer only when the whole batch is done
    res.wall = time.perf_counter() - start
    return res


async def prefix_speedup(args: argparse.Namespace) -> None:
    rng = random.Random(5)
    system = [rng.randrange(256) for _ in range(args.system_tokens)]
    reqs = [
        (system + [rng.randrange(256) for _ in range(16)], 16) for _ in range(args.prefix_requests)
    ]
    print(
        f"\nprefix cache: {len(reqs)} requests sharing a {args.system_tokens}-token "
        "system prompt, concurrency 4"
    )
    print("| prefix caching | requests/s | TTFT P50 ms | TTFT P99 ms |\n|---|---|---|---|")
    rates = {}
    for on in (False, True):
        engine = GenerateEngine(build_core(worker_config(args, 4, prefixCaching=str(on).lower())))
        engine.start()
        try:
            res = await run_engine(engine, reqs, 4)
        finally:
            engine.stop()
        rates[on] = len(reqs) / res.wall
        t = sorted(res.ttft)
        print(
            f"| {'on' if on else 'off'} | {rates[on]:.1f} | {1000 * t[len(t) // 2]:.1f} | "
            f"{1000 * t[int(0.99 * len(t))]:.1f} |"
        )
    print(f"speed-up: {rates[True] / rates[False]:.1f}x requests/s")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--per-client", type=int, default=4)
    p.add_argument("--max-prompt", type=int, default=128)
    p.add_argument("--mean-out", type=int, default=64)
    p.add_argument("--lengths", choices=["exponential", "uniform"], default="exponential")
    p.add_argument("--system-tokens", type=int, default=1000)
    p.add_argument("--prefix-requests", type=int, default=24)
    p.add_argument("--rounds", type=int, default=2, help="interleaved runs; the best counts")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # as the serving worker: one core for the event loop
    print(
        "| engine | concurrency | output tok/s | TTFT P50 ms | TTFT P99 ms | ITL P50 ms "
        "| ITL P99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for conc in (int(c) for c in args.concurrency.split(",")):
        # No prefix caching here: rounds repeat the same prompts (HF has no such cache).
        engine = GenerateEngine(build_core(worker_config(args, conc, prefixCaching="false")))
        engine.start()
        vocab = min(256, engine.core.model.config.vocab_size)
        reqs = workload(
            conc * args.per_client, vocab, conc, args.max_prompt, args.mean_out, args.lengths
        )
        hf = hf_model(engine)
        runs: list[Result] = []
        statics: list[Result] = []
        try:
            for _ in range(args.rounds):  # interleaved: both see the same background load
                runs.append(await run_engine(engine, reqs, conc))
                statics.append(run_static(hf, reqs, conc))
        finally:
            engine.stop()
        ours, static = max(runs, key=Result.rate), max(statics, key=Result.rate)
        speedup = (ours.tokens / ours.wall) / (static.tokens / static.wall)
        print(ours.row("infleet", conc))
        print(static.row("HF static batch", conc))
        print(f"|  | speed-up | **{speedup:.1f}x** | | | | |")
    await prefix_speedup(args)


if __name__ == "__main__":
    asyncio.run(main())
