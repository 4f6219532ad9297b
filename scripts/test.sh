#!/usr/bin/env bash
# Runs every k3rs test: formatting, lints, unit tests, and the cross-daemon
# tests against real etcd, PostgreSQL and MariaDB. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
# Keep build artefacts outside the clone so CI's fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/k3rs/target}"
export CARGO_INCREMENTAL=0

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every binary, with the same features as the test build, so the tests that
# run the real daemons (k3rs server, ...) find them fresh beside themselves.
cargo build --workspace --bins --tests --locked
cargo nextest run --workspace --locked --profile ci "$@"
