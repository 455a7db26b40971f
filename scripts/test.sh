#!/usr/bin/env bash
# Every test: unit, property, and DPDK on virtual devices. Also what keeps
# main clean: rustfmt and clippy with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check || { echo "test: run 'cargo fmt --all'" >&2; exit 1; }
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# Integration tests run lbctl next to lbd: build every binary first.
cargo build --workspace --locked
cargo test --workspace --locked
# Coverage-guided fuzzing, briefly: every target for FUZZ_SECONDS (30) on
# top of its seeds and the corpus of earlier runs; a crash fails the test.
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
