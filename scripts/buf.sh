#!/usr/bin/env bash
# buf (lint, curl) from npm, pinned, installed once under DIR (default
# target/buf, or $CARGO_TARGET_DIR/buf): prints the path of the buf binary.
# Idempotent: an installed buf of the pinned version is reused. Needs npm
# (Debian's npm package; scripts/setup.sh installs it) and the npm registry.
set -euo pipefail
BUF_VERSION=1.75.0
cd "$(dirname "$0")/.."
dir="${1:-${CARGO_TARGET_DIR:-target}/buf}"
bin="$dir/node_modules/.bin/buf"
# One install at a time (tests run in parallel): the others wait, then
# find it installed.
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    echo "$bin"
    exit 0
fi
command -v npm >/dev/null || { echo "buf.sh: npm not found (Debian: apt-get install npm; scripts/setup.sh does)" >&2; exit 1; }
if ! npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2; then
    echo "buf.sh: npm could not install @bufbuild/buf@$BUF_VERSION into $dir (is the npm registry reachable?)" >&2
    exit 1
fi
got="$("$bin" --version 2>&1)" || { echo "buf.sh: $bin does not run: $got" >&2; exit 1; }
[ "$got" = "$BUF_VERSION" ] || { echo "buf.sh: $bin is $got, not $BUF_VERSION" >&2; exit 1; }
echo "$bin"
