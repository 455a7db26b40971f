#!/usr/bin/env bash
# Everything the build, the tests and the demo need on a fresh Debian 12
# machine (as root): Debian packages, then hugepages. Idempotent: a second run
# installs nothing and reserves nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: DPDK 22.11 and its pkg-config file, libclang for bindgen, a C
# compiler for the shim, protoc for the gRPC crate. Tests and demo: tcpdump,
# python3, iproute2, ethtool, ping, curl, pkill; the lab's real servers
# (nginx), its packet floods (hping3) and its BGP speakers (BIRD 2); the
# monitoring test's Prometheus and promtool (prometheus; its own service is
# not started, as for nginx and BIRD below). The Python client's test:
# python3-venv (its virtual environment, with pip). The Go client, built
# offline from Debian's Go packages alone (clients/go): Go 1.19, grpc-go
# 1.33, the protobuf runtime (APIv2) with golang/protobuf 1.5, which
# grpc-go's codec goes through (apt would otherwise pick 1.3, older than
# the APIv2 messages protoc-gen-go generates), and the plugins. lb-agent's
# tests: a real HAProxy polling it (haproxy; its service not started
# either), and jq and xmllint for its README's adapter recipes.
# buf (lint, curl: control/tests/buf_cli.rs): npm (pulls nodejs), through
# which scripts/buf.sh installs the pinned @bufbuild/buf into target/buf;
# Debian's npm only where no npm is installed (a NodeSource nodejs carries
# its own and conflicts with Debian's). The tunnel lab's test
# (control/tests/tunnel_lab.rs): tshark, to dissect the VXLAN frames lbd
# sends and the ICMP frag-needed it answers with.
PACKAGES=(
    libdpdk-dev dpdk dpdk-dev pkg-config libclang-dev clang protobuf-compiler build-essential
    libpcap-dev tcpdump python3 python3-venv iproute2 ethtool iputils-ping curl procps
    nginx-light hping3 bird2 prometheus
    golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
    protoc-gen-go protoc-gen-go-grpc
    haproxy jq libxml2-utils
    tshark
)

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@";
    elif command -v sudo >/dev/null; then sudo "$@";
    else echo "setup: need root for: $*" >&2; exit 1; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    as_root apt-get update -q
    # The lab and the tests run their own nginx, BIRD, Prometheus and HAProxy: installing the
    # packages must not start the system's (policy-rc.d 101 = "do not start").
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
    fi
    rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ -z "$policy" ] || as_root rm -f "$policy"
    [ "$rc" = 0 ] || exit "$rc"
else
    echo "setup: Debian packages present"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }

as_root hugepages/hugepages.sh "${HUGEPAGES:-1024}"
