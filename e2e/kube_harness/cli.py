"""``python -m kube_harness.cli up|down|status|serve`` (``make cluster-up`` / ``cluster-down``).

``up`` starts the control plane + node agent in a background supervisor
process (``serve``), waits until it is ready, prints the KUBECONFIG path and
returns. ``up --foreground`` runs it in the foreground until Ctrl-C instead.
``down`` stops the supervisor (which tears everything down) and then removes
anything a crashed run may have left: processes, netns, veths, bridges.
The run directory (logs, kubeconfig, pod dirs) is ``$INFLEET_CACHE/run/cluster``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kube_harness.build import cache_root


def default_run_dir() -> Path:
    return cache_root() / "run" / "cluster"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _state(run_dir: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads((run_dir / "state.json").read_text()))
    except (OSError, ValueError):
        return None


def _print_ready(run_dir: Path, state: dict[str, object]) -> None:
    print(f"cluster up: {state['server']}  (logs: {run_dir / 'logs'})")
    print(f"gateway (pods reach the host here): {state['gateway']}")
    print(f"export KUBECONFIG={state['kubeconfig']}")


def serve(args: argparse.Namespace) -> int:
    from kube_harness.cluster import Cluster

    run_dir = Path(args.run_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    c = Cluster(run_dir=run_dir, nodes=args.nodes, gpus_per_node=args.gpus)
    c.start()
    print(f"[kube_harness] cluster started in {c.start_seconds:.1f}s", flush=True)
    state = _state(run_dir) or {}
    state["ready"] = True
    (run_dir / "state.json").write_text(json.dumps(state, indent=2))
    if args.foreground:
        _print_ready(run_dir, state)
        print("Ctrl-C to stop")
    try:
        while not stop.wait(1):
            dead = [n for n, comp in c.components.items() if not comp.alive()]
            if dead:
                print(f"[kube_harness] component(s) exited: {dead}; stopping", flush=True)
                break
    finally:
        c.stop()
        with contextlib.suppress(OSError):
            (run_dir / "state.json").unlink()
        print("[kube_harness] cluster stopped", flush=True)
    return 0


def up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    st = _state(run_dir)
    if st and _alive(int(str(st["pid"]))):
        _print_ready(run_dir, st)
        return 0
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if args.foreground:
        return serve(args)
    (run_dir / "logs").mkdir()
    out = (run_dir / "logs" / "supervisor.log").open("ab")
    cmd = [sys.executable, "-m", "kube_harness.cli", "serve", "--run-dir", str(run_dir)]
    cmd += ["--nodes", str(args.nodes), "--gpus", str(args.gpus)]
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        st = _state(run_dir)
        if st and st.get("ready"):
            _print_ready(run_dir, st)
            return 0
        if p.poll() is not None:
            break
        time.sleep(0.5)
    print(f"cluster failed to start; see {run_dir / 'logs'}", file=sys.stderr)
    with contextlib.suppress(OSError):
        print((run_dir / "logs" / "supervisor.log").read_text()[-4000:], file=sys.stderr)
    return 1


def down(args: argparse.Namespace) -> int:
    from kube_harness import net
    from kube_harness.nodeagent import MountPoints

    run_dir = Path(args.run_dir)
    st = _state(run_dir)
    if st:
        pid = int(str(st["pid"]))
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(600):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        comps = st.get("components") or {}
        assert isinstance(comps, dict)
        for cpid in comps.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(cpid), signal.SIGKILL)
        if "slot" in st:
            # only if the slot is still ours: a stale state file's slot may have been
            # reclaimed by another cluster since
            slot = int(str(st["slot"]))
            owner = net._bridge_owner(f"infleet{slot}")
            if owner is None or owner == pid or not _alive(owner):
                net.cleanup_slot(slot)
        with contextlib.suppress(OSError):
            (run_dir / "state.json").unlink()
    # anything left by crashed runs whose owner is gone
    for slot in range(net.SLOTS):
        br = f"infleet{slot}"
        owner = net._bridge_owner(br) if net.link_exists(br) else None
        if owner is None or not _alive(owner):
            net.cleanup_slot(slot)
    net.remove_blackholes_if_unused()
    MountPoints().sweep()
    left = net.leftovers()
    print(
        "cluster down"
        + (f" (still present, owned by live runs: {left})" if any(left.values()) else "")
    )
    return 0


def status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    st = _state(run_dir)
    if st and _alive(int(str(st["pid"]))):
        _print_ready(run_dir, st)
        return 0
    print("cluster not running")
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kube_harness.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "serve", "down", "status"):
        s = sub.add_parser(name)
        s.add_argument("--run-dir", default=str(default_run_dir()))
        if name in ("up", "serve"):
            s.add_argument("--nodes", type=int, default=2)
            s.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu per node")
            s.add_argument("--foreground", action="store_true")
    a = p.parse_args(argv)
    return {"up": up, "serve": serve, "down": down, "status": status}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
