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
# The same for lb-agent, which runs on the backends, where there is no DPDK
# (its tests run with the workspace's).
for crate in lb-core lb-agent; do
    if cargo tree -p "$crate" -e normal,build --prefix none --locked | grep -E '^(dpdk-sys|bindgen|dataplane) '; then
        echo "test-core: $crate depends on DPDK" >&2
        exit 1
    fi
done
