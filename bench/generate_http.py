"""The generation worker through HTTP: an ``infleet-worker`` process serving
builtin://llama, C clients streaming ``/v1/completions`` (SSE) from this process, the
same closed-loop workload as bench/generate.py. Shows what the serving layer (event
loop, JSON, SSE, sharing the GIL with the engine thread) costs on top of the engine.

    PYTHONPATH=worker:bench python bench/generate_http.py --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp

from generate import Result, workload
from serverproc import free_port, stop_process, wait_http_ready


async def drive(port: int, reqs: list[tuple[list[int], int]], conc: int) -> Result:
    res = Result()
    queue = list(reversed(reqs))
    url = f"http://127.0.0.1:{port}/v1/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            while queue:
                prompt, n = queue.pop()
                body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True}
                body["ignore_eos"] = True
                t0 = last = time.perf_counter()
                first = True
                async with session.post(url, json=body) as r:
                    async for line in r.content:
                        if not line.startswith(b"data: {"):
                            continue
                        now = time.perf_counter()
                        (res.ttft if first else res.itl).append(now - (t0 if first else last))
                        first, last = False, now
                        res.tokens += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        res.wall = time.perf_counter() - start
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--per-client", type=int, default=4)
    args = p.parse_args()
    http, metrics, grpc = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "infleet_worker.cli", "--model-source", "builtin://llama",
        "--model-name", "llama", "--host", "127.0.0.1", "--http-port", str(http),
        "--metrics-port", str(metrics), "--grpc-port", str(grpc), "--device", "cpu",
        "--max-batch-size", str(args.concurrency), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        wait_http_ready(http, proc, 120)
        conc = args.concurrency
        reqs = workload(conc * args.per_client, 256, conc, 128, 64, "exponential")
        res = asyncio.run(drive(http, reqs, conc))
    finally:
        stop_process(proc)
    print("| route | concurrency | output tok/s | TTFT P50 ms | TTFT P99 ms | ITL P50 ms ", end="")
    print("| ITL P99 ms |")
    print("|---|---|---|---|---|---|---|")
    print(res.row("infleet HTTP SSE", conc))


if __name__ == "__main__":
    main()
