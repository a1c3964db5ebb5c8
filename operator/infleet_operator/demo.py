"""`infleet dev demo`: the example fleets, validated and explained.

For each example: what the operator will run (GPUs per pod, the worker config
it mounts) and who owns the replica count. The live fleet on a local control
plane with real traffic is `make demo` (e2e/fleet/demo.py: it needs the
checkout's harness, which the installed package never imports).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infleet_operator import manifests
from infleet_worker.config import WorkerConfig, effective_batch_buckets


def run(args: argparse.Namespace) -> int:
    root = Path(args.examples)
    files = sorted(root.glob("*.yaml"))
    if not files:
        print(f"no examples under {root}")
        return 1
    status = 0
    for path in files:
        good, bad = manifests.validate_file(path)
        for problem in bad:
            status = 1
            print(f"[invalid] {path}: {problem.name}")
            for line in problem.errors:
                print(f"    {line}")
        for obj in good:
            spec = obj.spec
            name = obj.metadata.get("name")
            owner = (
                f"autoscaler ({spec.autoscaling.policy.value}, "
                f"{spec.autoscaling.min_replicas}..{spec.autoscaling.max_replicas})"
                if spec.autoscaling.enabled
                else f"spec.replicas = {spec.replicas}"
            )
            worker = WorkerConfig(
                model=spec.model, engine=spec.engine, batching=spec.batching, cache=spec.cache
            )
            print(f"== {name}  ({path})")
            print(
                f"   model        {spec.model.name} v{spec.model.version} from {spec.model.source}"
            )
            print(
                f"   GPUs per pod {spec.gpus_per_pod}  "
                f"(engine.pipelineParallel on {spec.engine.device.value})"
            )
            print(
                f"   batch        max {spec.batching.max_batch_size}, buckets "
                f"{effective_batch_buckets(spec.engine, spec.batching)}"
            )
            print(f"   cache        {spec.cache.mode.value}")
            print(f"   replicas     owned by {owner}")
            print("   worker config (mounted as /etc/infleet/worker.json):")
            for line in json.dumps(worker.to_wire(), indent=2).splitlines():
                print(f"     {line}")
    return status
