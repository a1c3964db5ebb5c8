"""``make gpu-check``: every GPU path of the engine on a real GPU, one table, <= 5 minutes.

Runs with a plain ``python3`` that has torch (the project travels as a working tree; no
venv, no package registry needed): the GPU tests with per-test and outer timeouts, the
pipeline bench (pp2 vs pp1, CUDA graphs), the engine ceiling (int8 / fp8 /
int8-weight-only vs bf16 at batch 1/8/128, engine vs a raw encoder), then one summary
table. Each step runs in its own process group under a timeout, so a hang costs that
step's budget, never the run. Exit status: 0 when every step passed, 1 otherwise.

Without a GPU it says what it skipped, runs CPU-sized versions of the benches (so the
script itself is tested anywhere) and exits 0.

Needs numpy and pydantic (the engine), pytest (the tests; pytest-timeout for per-test
timeouts). The serving bench uses the compiled transport when ``build/native`` holds it
(``scripts/build_native.sh build/native`` here, then carry ``build/native``: the device
has no crate registry), the Python one otherwise (said in the table's notes). Missing
modules are named; ``--wheels DIR`` installs them from local wheels (``pip install
--no-index``) into a temporary directory, never from the network.

    python3 bench/gpu_check.py            # or: make gpu-check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gpu_check_table as table

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 300
GPU_TESTS = [
    "tests/test_engine_cuda.py",
    "tests/test_pipeline_gpu.py",
    "tests/test_worker_device_faults.py",
]


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout: float
    rc: int | None = None
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.rc is None:
            return "not run"
        return {0: "PASS", 124: f"TIMEOUT ({self.timeout:.0f}s)"}.get(self.rc, f"FAIL rc={self.rc}")


def environment(extra_path: list[str]) -> dict[str, str]:
    paths = [*extra_path, *(str(ROOT / p) for p in ("worker", "operator", "e2e", "bench", "tests"))]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_step(step: Step, env: dict[str, str]) -> Step:
    """Run in its own process group; on timeout kill the whole group (rc 124)."""
    print(f"\n== {step.name} ({step.timeout:.0f}s max)\n$ {' '.join(step.argv)}", flush=True)
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            step.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            step.rc = proc.wait(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            step.rc = 124
        log.seek(0)
        lines = log.read().splitlines()
    step.seconds = time.monotonic() - start
    step.tail = lines[-40:]
    print("\n".join(lines[-150:]), flush=True)
    return step


def missing_modules(env: dict[str, str], names: list[str]) -> list[str]:
    code = (
        "import importlib.util, sys; "
        "print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *names], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def install_local(wheels: Path, packages: list[str], target: Path) -> bool:
    """pip install --no-index from a local wheel directory into ``target``."""
    argv = [sys.executable, "-m", "pip", "install", "--no-index", "--quiet"]
    argv += ["--find-links", str(wheels), "--target", str(target), *packages]
    print(f"installing {packages} from {wheels} (no network)", flush=True)
    return subprocess.run(argv, check=False).returncode == 0


def gpu_steps(work: Path, per_test: bool) -> list[Step]:
    py = sys.executable
    # faulthandler (built into pytest) dumps every thread's stack of a test past 45 s, even
    # one stuck in C: the diagnosis of a hang. pytest-timeout then interrupts it if it can.
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-rs"]
    pytest += ["-o", "faulthandler_timeout=45"]
    if per_test:
        pytest += ["--timeout", "60", "--timeout-method", "signal"]
    return [
        Step("GPU tests", [*pytest, *GPU_TESTS], 90),
        Step(
            "pipeline bench",
            [py, "bench/pipeline.py", "--device", "cuda", "--precision", "bf16", "--params", "full",
             "--batch", "128", "--micro-batches", "4", "--stages", "1,2", "--iters", "20",
             "--no-overlap", "--json", str(work / "pipeline.json")],
            40,
        ),
        Step(
            "engine ceiling",
            [py, "bench/engine_ceiling.py", "--device", "cuda", "--models", "encoder-base,mlp",
             "--precisions", "bf16,int8,fp8,int8-weight-only", "--batch-sizes", "1,8,128",
             "--iters", "20", "--max-seconds", "2", "--raw", "--json", str(work / "ceiling.json")],
            60,
        ),
        # The worker pod end to end against its engine alone (issue 14): needs
        # tritonclient (carry it as a wheel: --wheels).
        Step(
            "serving bench",
            [py, "bench/frontends.py", "--device", "cuda", "--duration", "5",
             "--json", str(work / "serving.json")],
            110,
        ),
    ]  # fmt: skip


def cpu_steps(work: Path) -> list[Step]:
    py = sys.executable
    return [
        Step(
            "pipeline bench (CPU-sized)",
            [py, "bench/pipeline.py", "--device", "cpu", "--precision", "fp32",
             "--params", "layers=2,hidden=32,heads=2,ffn=64,seq=8", "--batch", "8",
             "--micro-batches", "2", "--stages", "1,2", "--iters", "2", "--no-overlap",
             "--json", str(work / "pipeline.json")],
            60,
        ),
        Step(
            "engine ceiling (CPU-sized)",
            [py, "bench/engine_ceiling.py", "--device", "cpu", "--models", "mlp",
             "--param", "mlp:width=32", "--param", "mlp:depth=2",
             "--precisions", "fp32,int8,fp8,int8-weight-only", "--batch-sizes", "1,8",
             "--iters", "2", "--max-seconds", "1", "--json", str(work / "ceiling.json")],
            60,
        ),
        Step(
            "serving bench (CPU-sized)",
            [py, "bench/frontends.py", "--device", "cpu", "--points", "grpc:1:8,http:2:8",
             "--duration", "1", "--warmup", "0.5", "--json", str(work / "serving.json")],
            90,
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=os.environ.get("INFLEET_WHEELS"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    if importlib.util.find_spec("torch") is None:
        print(
            f"gpu-check: {sys.executable} cannot import torch; run it with a python that has torch"
        )
        return 1
    import torch

    gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="infleet-gpu-check-") as tmp:
        work = Path(tmp)
        site: list[str] = []
        if (ROOT / "build" / "native").is_dir():  # a prebuilt compiled transport
            site.append(str(ROOT / "build" / "native"))
        env = environment(site)
        needed = ["numpy", "pydantic", "tritonclient"]
        needed += ["pytest", "pytest_timeout"] if gpu else []
        missing = missing_modules(env, needed)
        if missing and args.wheels is not None and args.wheels.is_dir():
            names = [m.replace("_", "-") for m in missing]
            if install_local(args.wheels, names, work / "site"):
                site.append(str(work / "site"))
                env = environment(site)
                missing = missing_modules(env, needed)
        notes: list[str] = []
        lacking = [m for m in missing if m in ("numpy", "pydantic")]
        if lacking:
            print(
                f"gpu-check: {sys.executable} lacks {lacking}, which the engine needs: "
                "install them, or pass --wheels DIR (local wheels)"
            )
            return 1
        if gpu:
            name = torch.cuda.get_device_name(0)
            cc = ".".join(map(str, torch.cuda.get_device_capability(0)))
            where = f"{name} (compute capability {cc}) x{torch.cuda.device_count()}"
            steps = gpu_steps(work, per_test="pytest_timeout" not in missing)
            if "pytest" in missing:
                steps = steps[1:]
                notes.append(
                    "GPU tests NOT RUN: pytest is missing for this python (install pytest and "
                    "pytest-timeout, or pass --wheels DIR)"
                )
            elif "pytest_timeout" in missing:
                notes.append("pytest-timeout missing: no per-test timeouts (the outer one holds)")
        else:
            where = "no CUDA GPU"
            print(
                "gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False).\n"
                f"  skipped: {', '.join(GPU_TESTS)}, the GPU pipeline bench, the GPU engine "
                "ceiling\n  running CPU-sized benches so the script itself is exercised",
                flush=True,
            )
            steps = cpu_steps(work)
        if "tritonclient" in missing:
            steps = [s for s in steps if not s.name.startswith("serving bench")]
            notes.append(
                "serving bench NOT RUN: tritonclient is missing for this python (its load "
                "generator's client; pass --wheels DIR with tritonclient and its needs)"
            )
        if any(s.name.startswith("serving bench") for s in steps) and missing_modules(
            env, ["infleet_transport"]
        ):
            notes.append(
                "serving bench on the Python transport (aiohttp, grpcio): the compiled one is "
                "not here (scripts/build_native.sh build/native, and carry build/native)"
            )
        for step in steps:
            left = BUDGET_SECONDS - (time.monotonic() - started)
            step.timeout = max(1.0, min(step.timeout, left))
            run_step(step, env)
        results = {p.stem: json.loads(p.read_text()) for p in work.glob("*.json")}
    elapsed = time.monotonic() - started
    head = f"gpu-check on {where}, torch {torch.__version__}, python {sys.version.split()[0]}"
    print("\n" + table.summary(head, steps, results, notes, elapsed))
    failed = [s for s in steps if s.rc != 0] or (notes if gpu and "pytest" in missing else [])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
