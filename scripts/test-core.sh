#!/usr/bin/env bash
# The pure forwarding core (lb-core) builds and passes its tests on a machine
# without DPDK: `make test` runs this before setup installs anything, and
# pkg-config is pointed at an empty directory so that even where libdpdk is
# installed, a dependency on it here fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."

empty=$(mktemp -d)
trap 'rmdir "$empty"' EXIT
PKG_CONFIG_LIBDIR="$empty" PKG_CONFIG_PATH="" cargo test -p lb-core --locked
# Nothing in its dependency tree may reach DPDK or bindgen.
if cargo tree -p lb-core -e normal,build --prefix none --locked | grep -E '^(dpdk-sys|bindgen|dataplane) '; then
    echo "test-core: lb-core depends on DPDK" >&2
    exit 1
fi
