#!/usr/bin/env bash
# Builds and starts k3rs. For now that is the datastore on its default SQLite
# file, serving the etcd v3 API on 127.0.0.1:2379 (extra flags are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k3rs/target}"
exec cargo run --release --locked -p k3rs-datastore -- --listen-address 127.0.0.1:2379 "$@"
