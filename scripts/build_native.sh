#!/usr/bin/env bash
# Build the worker's compiled gRPC transport (worker/native, a PyO3 extension) and
# put it on this checkout's overlay venv. Idempotent: cargo rebuilds only on change;
# the build directory lives in the cache, outside the repo.
#   scripts/build_native.sh [SITE_PACKAGES]
# Without cargo the worker serves gRPC on grpcio (server.grpcTransport auto), so a
# machine without Rust still runs everything; INFLEET_NATIVE=required makes that an error.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${INFLEET_CACHE:-$HOME/.cache/infleet}"
SITE="${1:-}"
if [ -z "$SITE" ]; then
  SITE="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
fi
log() { printf '[build_native] %s\n' "$*" >&2; }

CARGO="${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}"
if ! "$CARGO" --version >/dev/null 2>&1; then
  if [ "${INFLEET_NATIVE:-}" = required ]; then
    log "cargo not found and INFLEET_NATIVE=required"; exit 1
  fi
  log "cargo not found: gRPC will be served by grpcio (install Rust for the compiled transport)"
  rm -f "$SITE"/infleet_transport*.so
  exit 0
fi

export CARGO_TARGET_DIR="$CACHE/cargo-target"
log "cargo build --release (worker/native; the first build takes a minute or two)"
"$CARGO" build --quiet --release --locked --manifest-path "$ROOT/worker/native/Cargo.toml"
built="$CARGO_TARGET_DIR/release/libinfleet_transport.so"
dest="$SITE/infleet_transport.abi3.so"
if ! cmp -s "$built" "$dest" 2>/dev/null; then
  # Replace, never rewrite in place: a running worker may have the old one mapped.
  cp "$built" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
fi
