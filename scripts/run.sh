#!/usr/bin/env bash
# Builds k3rs and starts a server: `k3rs server` runs the datastore on its
# SQLite file and the API server on https://127.0.0.1:6443, and writes the
# admin kubeconfig (/etc/k3rs/k3rs.yaml as root, ~/.kube/k3rs.yaml otherwise).
# Extra flags go to `k3rs server` (see `k3rs server --help`). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k3rs/target}"
cargo build --release --locked -p k3rs -p k3rs-datastore -p k3rs-apiserver
exec "$CARGO_TARGET_DIR/release/k3rs" server "$@"
