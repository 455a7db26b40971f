#!/usr/bin/env bash
# Coverage-guided fuzzing of lbd's parsers and decisions (fuzz/), with
# libFuzzer, on the stable toolchain. cargo-fuzz needs nightly only for its
# sanitizer flag; the coverage instrumentation libFuzzer steers by is
# stable rustc's (-Cpasses=sancov-module and LLVM's sanitizer-coverage
# options, the flags cargo-fuzz itself passes), so this script builds the
# same targets without nightly, which CI's machine may lack. With nightly,
# `cargo +nightly fuzz run forward` (from fuzz/) works as well.
#
# Usage: scripts/fuzz.sh [SECONDS_EACH] [TARGET...]
#   SECONDS_EACH  how long each target runs (default 30)
#   TARGET        packets forward state_file grpc_api health_replies
#                 (default: all)
# Environment:
#   FUZZ_JOBS     parallel libFuzzer processes per target (default 1)
#   FUZZ_ARGS     more libFuzzer options, e.g. "-runs=1000000"
#
# The corpus grows in target/fuzz/corpus/TARGET across runs, on top of the
# seeds fuzz-seeds writes (golden pcaps, state files, API calls). A crash
# stops the run with its input in target/fuzz/artifacts/TARGET/: fix the
# cause and copy the input to fuzz/regressions/TARGET/, which
# `cargo test -p lb-fuzz` replays on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-30}
shift || true
TARGETS=("$@")
JOBS=${FUZZ_JOBS:-1}

# The seed writer is an ordinary binary (the instrumented ones need
# libFuzzer's runtime, which only the targets link).
cargo build --locked -p lb-fuzz --bin fuzz-seeds
SEEDER=$PWD/target/debug/fuzz-seeds

export CARGO_TARGET_DIR=$PWD/target/fuzz
# An explicit --target keeps these flags off build scripts and proc macros.
HOST=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
ALL=(packets forward state_file grpc_api health_replies)
cargo build --release --locked -p lb-fuzz --target "$HOST" "${ALL[@]/#/--bin=}"
BIN=$CARGO_TARGET_DIR/$HOST/release
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

SEEDS=$CARGO_TARGET_DIR/seeds
rm -rf "$SEEDS"
"$SEEDER" "$SEEDS"

for t in "${TARGETS[@]}"; do
    [ -x "$BIN/$t" ] || { echo "fuzz: no target $t" >&2; exit 2; }
    corpus=$CARGO_TARGET_DIR/corpus/$t
    artifacts=$CARGO_TARGET_DIR/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    log=$CARGO_TARGET_DIR/$t.log
    echo "fuzz: $t for ${SECS}s ($JOBS job(s)), log $log"
    fork=()
    [ "$JOBS" -le 1 ] || fork=(-fork="$JOBS")
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
    if ! "$BIN/$t" -max_total_time="$SECS" -print_final_stats=1 "${fork[@]}" \
        -artifact_prefix="$artifacts/" -max_len=4096 ${FUZZ_ARGS:-} \
        "$corpus" "$SEEDS/$t" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t failed; its input is in $artifacts/" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "$log" | sed "s/^/fuzz: $t /" || true
    grep -E "cov: [0-9]+" "$log" | tail -n 1 | sed "s/^/fuzz: $t /" || true
done
