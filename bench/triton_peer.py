"""NVIDIA Triton Inference Server as a peer for bench/serving.py (CPU, Python backend).

The ``nvidia-pytriton`` wheel ships a real ``tritonserver`` binary, the Python backend and
prebuilt Python-backend stubs. PyTriton's own Python wrapper is not used (it fails on this
interpreter); only the binary is. Set-up (idempotent, printed as it goes):

1. ``ensure_installed()``: a separate venv under ``~/.cache/infleet/triton-peer`` with the
   wheel installed ``--no-deps`` (the wheel pins numpy<2; the main venv stays untouched).
2. ``build_repository(dir, ...)``: a model repository generated at run time: ``model.py``
   (Python backend) builds the same ``builtin://mlp`` as the infleet worker (same
   ``infleet_worker.models`` code, parameters and seed, so the same weights), runs the
   requests of one dynamic batch as one torch forward; ``config.pbtxt`` with dynamic
   batching at the same settings as the infleet worker. The wheel's stub for this Python
   is copied into the wheel's ``backends/python`` (the only place Triton 2.51 looks).
3. ``start(...)``: ``tritonserver`` with ``PYTHONPATH`` holding the backend utils, the main
   venv's site-packages (torch) and ``worker/`` (infleet_worker), ``LD_LIBRARY_PATH`` holding
   the main interpreter's libpython so the stub embeds the same Python as the venv.

    python bench/triton_peer.py --install     # set up only
    python bench/triton_peer.py --serve       # set up, serve on free ports until Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

from serverproc import free_port, stop_process, wait_http_ready

PEER_HOME = Path.home() / ".cache" / "infleet" / "triton-peer"
WHEEL = "nvidia-pytriton==0.7.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
PY_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"


def log(msg: str) -> None:
    print(f"[triton-peer] {msg}", file=sys.stderr, flush=True)


def server_dir(home: Path = PEER_HOME) -> Path:
    return home / "venv" / "lib" / f"python{PY_TAG}" / "site-packages" / "pytriton" / "tritonserver"


def ensure_installed(home: Path = PEER_HOME) -> Path:
    """The wheel's ``tritonserver`` directory, installing the wheel into its own venv once."""
    tdir = server_dir(home)
    if (tdir / "bin" / "tritonserver").exists():
        log(f"installed: {tdir}")
        return tdir
    home.mkdir(parents=True, exist_ok=True)
    venv = home / "venv"
    if not (venv / "bin" / "pip").exists():
        log(f"creating venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"pip install --no-deps {WHEEL} (~100 MB download)")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-deps", "--quiet", WHEEL], check=True
    )
    if not (tdir / "bin" / "tritonserver").exists():
        raise RuntimeError(f"wheel installed but {tdir}/bin/tritonserver is missing")
    log(f"installed: {tdir}")
    return tdir


MODEL_PY = textwrap.dedent(
    '''\
    """Triton Python backend: infleet's builtin mlp, one torch forward per dynamic batch."""
    import json
    import os
    import site
    import sys

    # The stub's embedded interpreter does not see PYTHONPATH: the bench interpreter's
    # site dirs (torch; their .pth files too) and worker/ (infleet_worker), baked in.
    for _dir in __SITE_DIRS__:
        site.addsitedir(_dir)
    sys.path.insert(0, __WORKER_DIR__)

    import torch
    import triton_python_backend_utils as pb_utils
    from torch.utils.dlpack import to_dlpack

    from infleet_worker.models import builtin_factory


    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            threads = int(params.pop("cpu_threads", "0")) or len(os.sched_getaffinity(0))
            torch.set_num_threads(threads)
            self.model = builtin_factory("mlp")(params).eval()
            self.input_name = self.model.inputs[0].name
            self.output_name = self.model.outputs[0].name

        def execute(self, requests):
            # DLPack both ways, not numpy: the stub's pybind11 predates numpy 2 and gets a
            # numpy-2 array's itemsize wrong (as_numpy strides, empty outputs).
            arrays = [
                torch.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name))
                for r in requests
            ]
            batch = torch.cat(arrays) if len(arrays) > 1 else arrays[0]
            with torch.inference_mode():
                out = self.model(batch)[0]
            responses = []
            start = 0
            for a in arrays:
                rows = out[start : start + a.shape[0]].contiguous()
                start += a.shape[0]
                tensor = pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(rows))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            return responses
    '''
)


def build_repository(
    root: Path,
    *,
    model_name: str = "mlp",
    params: dict[str, str] | None = None,
    width: int = 256,
    max_batch_size: int = 64,
    max_queue_delay_us: int = 1000,
    cpu_threads: int = 0,
    tritonserver_dir: Path | None = None,
) -> Path:
    """A model repository under ``root`` serving builtin mlp as ``model_name``."""
    tdir = tritonserver_dir or server_dir()
    mdir = root / model_name
    (mdir / "1").mkdir(parents=True, exist_ok=True)
    site_dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    code = MODEL_PY.replace("__SITE_DIRS__", repr(list(dict.fromkeys(site_dirs))))
    (mdir / "1" / "model.py").write_text(
        code.replace("__WORKER_DIR__", repr(str(REPO_ROOT / "worker")))
    )
    all_params = {**(params or {}), "width": str(width), "cpu_threads": str(cpu_threads)}
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in sorted(all_params.items())
    )
    (mdir / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "{model_name}"
            backend: "python"
            max_batch_size: {max_batch_size}
            input [ {{ name: "input" data_type: TYPE_FP32 dims: [ {width} ] }} ]
            output [ {{ name: "output" data_type: TYPE_FP32 dims: [ {width} ] }} ]
            dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}
            instance_group [ {{ count: 1 kind: KIND_CPU }} ]
            """
        )
        + param_text
        + "\n"
    )
    install_stub(tdir)
    return root


def install_stub(tdir: Path) -> Path:
    """The wheel's stub for this Python, copied where the backend looks: backends/python.

    (Triton 2.51 searches only the backend directory, not the model directory; the copy
    sits at the same depth as the original, so its $ORIGIN rpath still finds the libs.)
    """
    stub = tdir / "python_backend_stubs" / PY_TAG / "triton_python_backend_stub"
    target = tdir / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"no Python backend stub for Python {PY_TAG} in the wheel: {stub}")
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        log(f"copying {stub} -> {target}")
        shutil.copy2(stub, target)
    return target


def server_env(tdir: Path) -> dict[str, str]:
    site = sysconfig.get_paths()["purelib"]
    pypath = [str(tdir / "backends" / "python"), site, str(REPO_ROOT / "worker")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pypath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    wheel_libs = str(tdir.parents[1] / "nvidia_pytriton.libs")  # the stub's libcudart
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, wheel_libs, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the infleet worker CLI sets it
    return env


def start(
    repo: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    *,
    tritonserver_dir: Path | None = None,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``tritonserver`` on 127.0.0.1 (not waited for: see ``serverproc.wait_http_ready``)."""
    tdir = tritonserver_dir or server_dir()
    cmd = [
        str(tdir / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={tdir / 'backends'}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--allow-metrics=false",
        "--log-verbose=0",
    ]
    log(" ".join(cmd))
    out = open(log_file, "wb") if log_file else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(cmd, env=server_env(tdir), stdout=out, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="set up only")
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C")
    parser.add_argument("--repo", type=Path, default=None, help="model repository dir")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument(
        "--model-param", action="append", default=[], help="mlp KEY=VALUE (depth=4, seed=0)"
    )
    args = parser.parse_args(argv)
    tdir = ensure_installed()
    if not args.serve:
        return 0
    import tempfile

    root = args.repo or Path(tempfile.mkdtemp(prefix="triton-peer-repo-"))
    params = {"depth": "4", "seed": "0"}  # bench/serving.py's defaults
    params.update(kv.split("=", 1) for kv in args.model_param)
    build_repository(root, params=params, width=args.width, tritonserver_dir=tdir)
    ports = free_port(), free_port(), free_port()
    proc = start(root, *ports, tritonserver_dir=tdir)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # stop the server on kill too
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background
    try:
        wait_http_ready(ports[0], proc, route="/v2/models/mlp/ready")
        log(f"ready: http 127.0.0.1:{ports[0]} grpc 127.0.0.1:{ports[1]}")
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
