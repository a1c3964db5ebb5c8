"""Build (and cache) the cluster binaries from the Go modules in e2e/gomod/.

``python -m kube_harness.build`` builds whatever is missing or stale and is a
no-op otherwise. Each tool has its own module (go.mod + go.sum with ``tool``
directives); the binaries land in ``$INFLEET_CACHE/k8s/<version>/bin`` keyed by
the tool's own version, with a stamp file holding a hash of go.mod, go.sum,
the Go version and the link flags. GOMODCACHE/GOCACHE stay at Go's defaults
(outside the repo) so a rebuild after a version bump is incremental.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GOMOD_DIR = Path(__file__).resolve().parent.parent / "gomod"
BUILD_SCHEMA = "2"  # bump to force a rebuild when the flags below change


def cache_root() -> Path:
    return Path(os.environ.get("INFLEET_CACHE", Path.home() / ".cache" / "infleet"))


@dataclass(frozen=True)
class Tool:
    name: str  # module directory under e2e/gomod
    module: str  # the module whose version keys the cache
    packages: tuple[str, ...]  # tool packages to build
    binaries: tuple[str, ...]  # resulting binary names

    def gomod(self) -> Path:
        return GOMOD_DIR / self.name / "go.mod"

    def version(self) -> str:
        text = self.gomod().read_text()
        m = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)}\s+(v\S+)", text, re.M)
        if not m:
            raise RuntimeError(f"{self.module} not required in {self.gomod()}")
        return m.group(1)

    def bin_dir(self) -> Path:
        v = self.version()
        key = v if self.name == "kubernetes" else f"{self.name}-{v}"
        return cache_root() / "k8s" / key / "bin"


TOOLS = (
    Tool(
        "kubernetes",
        "k8s.io/kubernetes",
        (
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "k8s.io/kubernetes/cmd/kubectl",
        ),
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ),
    Tool("etcd", "go.etcd.io/etcd/server/v3", ("go.etcd.io/etcd/server/v3",), ("etcd",)),
    Tool("helm", "helm.sh/helm/v3", ("helm.sh/helm/v3/cmd/helm",), ("helm",)),
)


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    helm: Path
    kubernetes_version: str

    def missing(self) -> list[Path]:
        return [
            p
            for p in (
                self.kube_apiserver,
                self.kube_controller_manager,
                self.kube_scheduler,
                self.kubectl,
                self.etcd,
                self.helm,
            )
            if not os.access(p, os.X_OK)
        ]


class BinariesMissing(RuntimeError):
    pass


def find_binaries(check: bool = True) -> Binaries:
    """Paths of the cached binaries; raises BinariesMissing (with the fix) if absent."""
    k8s, etcd, helm = (t.bin_dir() for t in TOOLS)
    b = Binaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        etcd=etcd / "etcd",
        helm=helm / "helm",
        kubernetes_version=TOOLS[0].version(),
    )
    if check and (missing := b.missing()):
        raise BinariesMissing(
            "cluster binaries missing: "
            + ", ".join(str(p) for p in missing)
            + " -- build them with `make k8s-bins` "
            "(PYTHONPATH=e2e python -m kube_harness.build)"
        )
    return b


def go_binary() -> str:
    for cand in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit("Go toolchain not found (need Go >= 1.26 on PATH or /usr/local/go/bin/go)")


def _go_env() -> dict[str, str]:
    # readonly: the checked-in go.mod/go.sum are the whole truth; a build never edits them
    flags = "-mod=readonly -buildvcs=false"
    return dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS=flags)


def _module_time(go: str, tool: Tool) -> str:
    """Publication time of the tool's module version (reproducible buildDate)."""
    out = subprocess.run(
        [go, "list", "-m", "-json", tool.module],
        cwd=tool.gomod().parent,
        env=_go_env(),
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout
    t = json.loads(out).get("Time") or "1970-01-01T00:00:00Z"
    return str(t).replace(".000", "").split(".")[0].rstrip("Z") + "Z"


def ldflags(go: str, tool: Tool) -> str:
    v = tool.version()
    flags = ["-s", "-w"]
    if tool.name == "kubernetes":
        major, minor = v.lstrip("v").split(".")[:2]
        date = _module_time(go, tool)
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={v}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate={date}",
            ]
    elif tool.name == "helm":
        flags += [f"-X helm.sh/helm/v3/internal/version.version={v}"]
        flags += ["-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
        # Without these helm assumes Kubernetes 1.20 when offline (`helm template`,
        # `helm lint`), failing charts that declare a newer kubeVersion.
        k8s_major, k8s_minor = TOOLS[0].version().lstrip("v").split(".")[:2]
        for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            flags += [
                f"-X {pkg}.k8sVersionMajor={k8s_major}",
                f"-X {pkg}.k8sVersionMinor={k8s_minor}",
            ]
    # etcd's version is a constant in go.etcd.io/etcd/api/v3/version: nothing to set.
    return " ".join(flags)


def stamp_key(go: str, tool: Tool) -> str:
    h = hashlib.sha256()
    h.update(BUILD_SCHEMA.encode())
    for f in ("go.mod", "go.sum"):
        h.update((tool.gomod().parent / f).read_bytes())
    h.update(
        subprocess.run([go, "version"], check=True, text=True, capture_output=True).stdout.encode()
    )
    return h.hexdigest()


def is_current(go: str, tool: Tool) -> bool:
    d = tool.bin_dir()
    stamp = d / ".stamp"
    if not stamp.exists() or any(not os.access(d / b, os.X_OK) for b in tool.binaries):
        return False
    return stamp.read_text().strip() == stamp_key(go, tool)


def build_tool(go: str, tool: Tool) -> None:
    d = tool.bin_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d.parent / ".bin-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flags = ldflags(go, tool)
    # one package: name the output (etcd's main package is go.etcd.io/etcd/server/v3 -> "server")
    out = str(tmp / tool.binaries[0]) if len(tool.packages) == 1 else str(tmp) + "/"
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", flags, "-o", out]
    cmd += list(tool.packages)
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    print(f"[k8s-bins] building {tool.name} {tool.version()} -> {d}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        nice + cmd,
        cwd=tool.gomod().parent,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    last = t0
    for n, raw in enumerate(proc.stdout, 1):
        line = raw.rstrip()
        tail = [*tail[-40:], line]
        now = time.monotonic()
        if now - last > 15:
            print(f"[k8s-bins]   {tool.name}: {n} packages, {now - t0:.0f}s ({line})", flush=True)
            last = now
    rc = proc.wait()
    if rc != 0:
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"[k8s-bins] go build of {tool.name} failed (exit {rc})")
    for b in tool.binaries:
        os.replace(tmp / b, d / b)
    shutil.rmtree(tmp, ignore_errors=True)
    (d / ".stamp").write_text(stamp_key(go, tool) + "\n")
    print(f"[k8s-bins] built {tool.name} in {time.monotonic() - t0:.0f}s", flush=True)


def ensure(names: list[str] | None = None, force: bool = False) -> Binaries:
    go = go_binary()
    for tool in TOOLS:
        if names and tool.name not in names:
            continue
        if not force and is_current(go, tool):
            print(f"[k8s-bins] {tool.name} {tool.version()} up to date ({tool.bin_dir()})")
            continue
        build_tool(go, tool)
    return find_binaries(check=not names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kube_harness.build", description=__doc__)
    p.add_argument("tools", nargs="*", help="subset of: " + ", ".join(t.name for t in TOOLS))
    p.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    p.add_argument("--print-paths", action="store_true", help="print binary paths as JSON")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    b = ensure(a.tools or None, force=a.force)
    if a.print_paths:
        print(json.dumps({k: str(v) for k, v in b.__dict__.items()}, indent=2))
    print(f"[k8s-bins] done in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
