"""`infleet profile`: measure a served model for the simulator, from a running worker.

Reads the worker's statistics extension (``GET /v2/models/<model>/stats``):
per batch size, how long the worker took from batch to outputs on the device
it runs on. With ``--drive N`` it first sends N requests of each batch size,
one at a time (KServe v2 JSON; ones for integer inputs, zeros for floats), so
every size is measured even on an idle worker. Pod start-to-Ready comes from
the operator's measurement in the InferenceDeployment's status
(``kubectl get infd NAME -o json > status.json``) or from ``--pod-start-seconds``.

A generating worker (``--generate``): streams completions through it and writes the
profile's ``generate`` section instead (decode step time per running sequences,
prefill time per token, KV capacity; :mod:`infleet_operator.simulator.gen_measure`).
``--batch-sizes`` are then the concurrent streams to measure (default 1,2,4,8).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from infleet_operator.simulator.profile import Profile, table_from_statistics


def add_profile_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help="measure a served model's batch service times for `infleet simulate --profile`",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--url", required=True, help="a worker's HTTP endpoint, e.g. http://10.0.0.7:8000"
    )
    p.add_argument("--model", required=True, help="model name as served")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--pod-start-seconds", type=float, default=None)
    start.add_argument(
        "--status",
        default=None,
        metavar="IDEP.json",
        help="`kubectl get infd NAME -o json` output: reads status.podStartSeconds",
    )
    p.add_argument(
        "--drive",
        type=int,
        default=0,
        metavar="N",
        help="send N requests of each batch size first (default: read only)",
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        metavar="1,2,4,..",
        help="sizes to drive (default: powers of 2 up to the model's max batch)",
    )
    p.add_argument("--device", default="", help="recorded in the profile (e.g. 'H100 80GB')")
    p.add_argument(
        "--generate",
        action="store_true",
        help="a generating worker: measure prefill and decode times and the KV capacity",
    )
    p.add_argument("--output-tokens", type=int, default=64, help="with --generate: per request")
    p.add_argument(
        "--repeats", type=int, default=8, help="with --generate: requests per stream and size"
    )
    p.add_argument("-o", "--out", default="profile.json")
    p.set_defaults(func=run_profile)
    return p


def _get(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        data: dict[str, Any] = json.load(r)
    return data


def fetch_statistics(url: str, model: str) -> dict[str, Any]:
    return _get(f"{url.rstrip('/')}/v2/models/{model}/stats")


def _request(spec: dict[str, Any], size: int) -> dict[str, Any]:
    shape = [size] + [d if d > 0 else 1 for d in spec["shape"][1:]]
    count = 1
    for d in shape:
        count *= d
    value = 0.0 if spec["datatype"].startswith(("FP", "BF")) else 1
    return {"name": spec["name"], "shape": shape, "datatype": spec["datatype"],
            "data": [value] * count}  # fmt: skip


def drive(url: str, model: str, n: int, sizes: list[int] | None) -> list[int]:
    """Send ``n`` sequential requests of each batch size; returns the sizes driven."""
    base = f"{url.rstrip('/')}/v2/models/{model}"
    meta, config = _get(base), _get(f"{base}/config")
    if not sizes:
        top = max(int(config.get("max_batch_size") or 1), 1)
        sizes = sorted({min(1 << k, top) for k in range(top.bit_length() + 1)})
    for size in sizes:
        body = json.dumps({"inputs": [_request(i, size) for i in meta["inputs"]]}).encode()
        for _ in range(n):
            req = urllib.request.Request(
                f"{base}/infer", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
    return sizes


def pod_start_from_status(path: str) -> float:
    obj = json.loads(Path(path).read_text())
    value = (obj.get("status") or {}).get("podStartSeconds")
    if value is None:
        raise ValueError(
            f"{path}: status.podStartSeconds is not set yet (the operator sets it once a "
            "worker pod has become Ready)"
        )
    return float(value)


def run_profile(args: argparse.Namespace) -> int:
    if args.generate:
        return run_generate_profile(args)
    try:
        if args.drive > 0:
            sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else None
            driven = drive(args.url, args.model, args.drive, sizes)
            print(f"drove {args.drive} request(s) of each batch size {driven}")
        table = table_from_statistics(fetch_statistics(args.url, args.model), args.model)
        start = args.pod_start_seconds
        if args.status:
            start = pod_start_from_status(args.status)
    except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
        print(f"infleet profile: {exc}", file=sys.stderr)
        return 2
    profile = Profile(service_table=table, model=args.model, device=args.device, source=args.url)
    if start is not None:
        profile = Profile(table, float(start), args.model, args.device, args.url)
    Path(args.out).write_text(profile.to_json())
    biggest = table[-1][0]
    print(f"wrote {args.out}: {len(table)} batch sizes (1..{biggest} seen)")
    for size, secs in table:
        print(f"  batch {size:>5}: {secs * 1000:9.2f} ms  ({size / secs:9.1f} rows/s)")
    print(
        f"pod start: {profile.pod_start_seconds:.0f} s"
        + ("" if start is not None else " (assumed: pass --status or --pod-start-seconds)")
    )
    cap = profile.capacity_per_replica(biggest)
    print(
        "to start the live autoscaler from this measurement, put in the manifest:\n"
        f"  autoscaling:\n    predictive:\n      capacityPerReplica: {cap:.1f}"
    )
    return 0


def run_generate_profile(args: argparse.Namespace) -> int:
    from infleet_operator.simulator.gen_measure import measure_generate

    sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else [1, 2, 4, 8]
    try:
        gen = measure_generate(
            args.url, args.model, sizes, args.output_tokens, repeats=args.repeats
        )
        start = pod_start_from_status(args.status) if args.status else args.pod_start_seconds
    except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
        print(f"infleet profile: {exc}", file=sys.stderr)
        return 2
    profile = Profile(model=args.model, device=args.device, source=args.url, generate=gen)
    if start is not None:
        profile = replace(profile, pod_start_seconds=float(start))
    Path(args.out).write_text(profile.to_json())
    print(f"wrote {args.out}: generation, KV cache {gen.kv_capacity_tokens:,} tokens")
    for n, secs in gen.decode_table:
        print(f"  {n:>4} sequences: {secs * 1000:8.2f} ms a step ({n / secs:9.1f} tokens/s)")
    print(f"  prefill: {gen.prefill_seconds_per_token * 1e6:.1f} us a prompt token")
    top = gen.decode_table[-1][0]
    print(
        "to start the live autoscaler from this measurement, put in the manifest:\n"
        f"  autoscaling:\n    predictive:\n"
        f"      capacityPerReplica: {gen.tokens_per_second(top):.0f}  # tokens/s at {top} streams"
    )
    return 0
