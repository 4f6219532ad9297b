#!/usr/bin/env bash
# Builds and starts k3rs: the datastore on its default SQLite file (etcd v3
# API on 127.0.0.1:2379) and the API server on https://127.0.0.1:6443 over
# it. Until the supervisor lands this script plays its part; extra flags go
# to the API server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k3rs/target}"
cargo build --release --locked -p k3rs-datastore -p k3rs-apiserver
bin="$CARGO_TARGET_DIR/release"

"$bin/k3rs-datastore" --listen-address 127.0.0.1:2379 &
datastore=$!
trap 'kill "$datastore" 2>/dev/null; wait "$datastore" 2>/dev/null' EXIT INT TERM

if [ "$(id -u)" = 0 ]; then certs=/var/lib/k3rs/server/tls; else certs="$HOME/.k3rs/server/tls"; fi
echo "run: admin kubeconfig will be at $certs/admin.kubeconfig (export KUBECONFIG=$certs/admin.kubeconfig)"
"$bin/k3rs-apiserver" --etcd-servers http://127.0.0.1:2379 --cert-dir "$certs" "$@"
