#!/usr/bin/env bash
# The DR lab: real clients and real servers around lbd, in network namespaces
# this script creates and removes. One implementation, used by `make demo`
# (scripts/demo.sh) and by the end-to-end tests (control/tests/dr_lab.rs).
#
#   client 192.0.2.100 ─┐
#   lbd    192.0.2.1  ──┤ bridge (namespace "sw")
#   be1..4 192.0.2.11-14┘   each owns the VIP 198.51.100.10 on lo and runs nginx
#
# Documentation address ranges only, inside these namespaces only. lbd takes
# the segment with DPDK net_af_packet on a veth; its exception interface
# carries the host's own traffic (health checks) back onto the segment.
#
# Usage: scripts/lab.sh COMMAND [ARGS]     (LAB_ID names one lab; default "demo")
#   up                  namespaces, bridge, addresses, nginx on be1..be4
#   down                stop everything and remove the namespaces (always safe)
#   lbd-start [ARGS]    start lbd (state file kept in the lab), wait for its API
#   lbd-stop            SIGTERM lbd and wait for it
#   configure [W1 W2 W3] lbctl: the VIP and be1..be3 with HTTP checks (weights)
#   wait-healthy N      until N backends pass their checks
#   nginx-stop N | nginx-start N
#   lbctl ARGS          lbctl against the lab's lbd
#   exec NS CMD...      run CMD in a namespace: client, lb, sw, be1..be4
#   requests N          N HTTP requests (each its own connection) from the client;
#                       prints one line per request: the serving backend or "FAILED"
#   downloads N RATE    N parallel downloads of /large at RATE (curl --limit-rate);
#                       prints "exit code size backend" per download when all end
#   hls SECONDS         fetch the playlist and its segments in a loop (one retry
#                       per fetch); prints "fetches N failed M"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ID=${LAB_ID:-demo}
DIR=${LAB_DIR:-/tmp/lblab-$ID}
LBD=${LBD:-$ROOT/target/debug/lbd}
LBCTL=${LBCTL:-$ROOT/target/debug/lbctl}

VIP=198.51.100.10
VIP_PORT=80
LOCAL=192.0.2.1
CLIENT=192.0.2.100
NS_PREFIX=lb$ID
CHECK=(--check http:/name --interval 200 --timeout 150 --rise 2 --fall 2)
LARGE_MB=${LAB_LARGE_MB:-8}

ns() { echo "$NS_PREFIX-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
backend_ip() { echo "192.0.2.$((10 + $1))"; }
die() { echo "lab: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"; }

cmd_down() {
    if [ -f "$DIR/lbd.pid" ]; then
        kill -TERM "$(cat "$DIR/lbd.pid")" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$(cat "$DIR/lbd.pid")" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$(cat "$DIR/lbd.pid")" 2>/dev/null || true
    fi
    for i in 1 2 3 4; do
        [ -f "$DIR/be$i/nginx.pid" ] && kill -TERM "$(cat "$DIR/be$i/nginx.pid")" 2>/dev/null || true
    done
    for n in client lb be1 be2 be3 be4 sw; do
        # Whatever still runs in the namespace goes with it.
        if ip netns pids "$(ns $n)" >/dev/null 2>&1; then
            ip netns pids "$(ns $n)" | xargs -r kill -KILL 2>/dev/null || true
            ip netns del "$(ns $n)" 2>/dev/null || true
        fi
    done
    rm -rf "$DIR"
}

nginx_conf() {
    local i=$1
    cat <<EOF
daemon on;
user root;
worker_processes 1;
pid $DIR/be$i/nginx.pid;
error_log $DIR/be$i/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # One request per connection: every request is a new flow for lbd.
    keepalive_timeout 0;
    sendfile on;
    client_body_temp_path $DIR/be$i/tmp;
    proxy_temp_path $DIR/be$i/tmp;
    fastcgi_temp_path $DIR/be$i/tmp;
    uwsgi_temp_path $DIR/be$i/tmp;
    scgi_temp_path $DIR/be$i/tmp;
    types {
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }
    default_type application/octet-stream;
    server {
        listen 80 reuseport;
        root $DIR/www;
        add_header X-Backend be$i always;
        location = /name { add_header X-Backend be$i always; return 200 "be$i\n"; }
    }
}
EOF
}

cmd_up() {
    need_root
    command -v nginx >/dev/null || die "nginx is missing: run scripts/setup.sh"
    cmd_down
    mkdir -p "$DIR/www/hls"
    # Content: a large file for long downloads, an HLS-style playlist.
    truncate -s "${LARGE_MB}M" "$DIR/www/large"
    {
        echo "#EXTM3U"; echo "#EXT-X-VERSION:3"; echo "#EXT-X-TARGETDURATION:2"
        echo "#EXT-X-MEDIA-SEQUENCE:0"
        for s in 0 1 2 3 4; do
            head -c 262144 /dev/urandom > "$DIR/www/hls/seg$s.ts"
            echo "#EXTINF:2.0,"; echo "seg$s.ts"
        done
    } > "$DIR/www/hls/live.m3u8"

    for n in sw client lb be1 be2 be3 be4; do
        ip netns add "$(ns $n)"
        in_ns "$n" ip link set lo up
    done
    in_ns sw ip link add br0 type bridge
    in_ns sw ip link set br0 up
    attach() { # namespace, its interface name
        local port="p-$1"
        in_ns sw ip link add "$port" type veth peer name "$2" netns "$(ns "$1")"
        in_ns sw ip link set "$port" master br0 up
        in_ns "$1" ip link set "$2" up
        # veth TX checksum offload leaves partial checksums, broken once a
        # frame has crossed DPDK.
        in_ns "$1" ethtool -K "$2" tx off >/dev/null
    }
    attach client eth0
    attach lb data0
    in_ns client ip addr add "$CLIENT/24" dev eth0
    # The VIP is reached through the segment (where a router would send it).
    in_ns client ip route add "$VIP/32" dev eth0
    for i in 1 2 3 4; do
        attach "be$i" eth0
        in_ns "be$i" ip addr add "$(backend_ip "$i")/24" dev eth0
        # Classic DR: the VIP on lo, never answered for on the segment.
        in_ns "be$i" ip addr add "$VIP/32" dev lo
        in_ns "be$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        mkdir -p "$DIR/be$i/tmp"
        nginx_conf "$i" > "$DIR/be$i/nginx.conf"
        cmd_nginx_start "$i"
    done
    echo "lab $ID up: client $CLIENT, backends 192.0.2.11-14, VIP $VIP:$VIP_PORT/tcp"
}

cmd_nginx_start() {
    # The daemon must not keep our stdout open (callers read it to the end).
    in_ns "be$1" nginx -c "$DIR/be$1/nginx.conf" -e "$DIR/be$1/error.log" \
        </dev/null >/dev/null 2>>"$DIR/be$1/error.log"
}

cmd_nginx_stop() {
    # Fast shutdown: open connections are closed, as when a server dies.
    in_ns "be$1" nginx -c "$DIR/be$1/nginx.conf" -e "$DIR/be$1/error.log" -s stop
    for _ in $(seq 50); do
        [ -f "$DIR/be$1/nginx.pid" ] || return 0
        sleep 0.1
    done
    die "nginx on be$1 did not stop"
}

eal_memory() {
    if [ "${LB_EAL_NO_HUGE:-}" = 1 ]; then echo "--no-huge --no-shconf"; return; fi
    local free size
    free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
    size=$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)
    [ $((free * size / 1024)) -ge 256 ] ||
        die "lbd needs 256 MiB of free hugepages: run scripts/setup.sh (or LB_EAL_NO_HUGE=1)"
    echo "--in-memory"
}

cmd_lbd_start() {
    need_root
    [ -x "$LBD" ] || die "$LBD is missing: cargo build --workspace"
    [ -f "$DIR/state.toml" ] || echo "local_addresses = [\"$LOCAL\"]" > "$DIR/state.toml"
    rm -f "$DIR/lbd.sock"
    local memory
    memory=$(eal_memory)
    # shellcheck disable=SC2086  # memory is two words at most
    ip netns exec "$(ns lb)" sh -c 'echo $$ > "$0"; exec "$@"' "$DIR/lbd.pid" \
        "$LBD" --lcores 0@0,1@1 --no-pci --file-prefix "lblab-$ID" -m 256 $memory \
        --log-level lib.eal:warning --vdev net_af_packet0,iface=data0 \
        -- --port net_af_packet0 --state "$DIR/state.toml" --kernel-iface lbk0 \
        --grpc-socket "$DIR/lbd.sock" --metrics-listen 127.0.0.1:9100 --flows 65536 \
        "$@" </dev/null >> "$DIR/lbd.log" 2>&1 &
    for _ in $(seq 200); do
        if [ -S "$DIR/lbd.sock" ] && "$LBCTL" --socket "$DIR/lbd.sock" info >/dev/null 2>&1; then
            # The host's address on the segment, behind the exception path.
            in_ns lb ip link set lbk0 up
            in_ns lb ip addr replace "$LOCAL/24" dev lbk0
            return 0
        fi
        kill -0 "$(cat "$DIR/lbd.pid" 2>/dev/null || echo 0)" 2>/dev/null ||
            { tail -20 "$DIR/lbd.log" >&2; die "lbd exited"; }
        sleep 0.1
    done
    tail -20 "$DIR/lbd.log" >&2
    die "lbd did not serve its API within 20 s"
}

cmd_lbd_stop() {
    local pid
    pid=$(cat "$DIR/lbd.pid")
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/lbd.pid"; return 0; }
        sleep 0.1
    done
    die "lbd did not stop within 10 s"
}

cmd_lbctl() { "$LBCTL" --socket "$DIR/lbd.sock" "$@"; }

cmd_configure() {
    local weights=("${1:-1}" "${2:-1}" "${3:-1}")
    cmd_lbctl vip add "$VIP:$VIP_PORT/tcp"
    for i in 1 2 3; do
        cmd_lbctl backend add "$VIP:$VIP_PORT/tcp" "$(backend_ip "$i")" \
            --weight "${weights[$((i - 1))]}" "${CHECK[@]}"
    done
}

cmd_wait_healthy() {
    for _ in $(seq 200); do
        [ "$(cmd_lbctl health | grep -cw healthy || true)" -ge "$1" ] && return 0
        sleep 0.1
    done
    cmd_lbctl health >&2
    die "fewer than $1 healthy backends after 20 s"
}

cmd_requests() {
    # URL globbing: one curl, N requests, each on its own connection (the
    # servers close after every response), so each gets a new source port.
    in_ns client curl -s --max-time 5 -o /dev/null -w '%header{x-backend}\n' \
        "http://$VIP/name?r=[1-$1]" | sed 's/^$/FAILED/'
}

cmd_downloads() {
    local n=$1 rate=$2 out
    out=$(mktemp -d)
    for i in $(seq "$n"); do
        # --speed-limit/--speed-time: a download stalled 15 s counts as failed.
        in_ns client curl -s -o /dev/null --limit-rate "$rate" --speed-limit 1000 \
            --speed-time 15 -w '%{http_code} %{size_download} %header{x-backend}\n' \
            "http://$VIP/large?d=$i" > "$out/$i" 2>/dev/null &
    done
    local i=0
    for pid in $(jobs -p); do
        i=$((i + 1))
        local rc=0
        wait "$pid" || rc=$?
        echo "$rc $(cat "$out/$i")"
    done
    rm -rf "$out"
}

cmd_hls() {
    local until=$(( $(date +%s) + $1 )) fetches=0 failed=0
    fetch() {
        fetches=$((fetches + 1))
        # A player retries a failed fetch once, a second later.
        in_ns client curl -sf --max-time 5 --retry 1 --retry-all-errors --retry-delay 1 \
            -o /dev/null "http://$VIP/hls/$1" || failed=$((failed + 1))
    }
    while [ "$(date +%s)" -lt "$until" ]; do
        fetch live.m3u8
        for s in 0 1 2 3 4; do fetch "seg$s.ts"; done
    done
    echo "fetches $fetches failed $failed"
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        lbd-start) cmd_lbd_start "$@" ;;
        lbd-stop) cmd_lbd_stop ;;
        configure) cmd_configure "$@" ;;
        wait-healthy) cmd_wait_healthy "$1" ;;
        nginx-start) cmd_nginx_start "$1" ;;
        nginx-stop) cmd_nginx_stop "$1" ;;
        lbctl) cmd_lbctl "$@" ;;
        # exec: the caller's pid becomes the command's (to signal it).
        exec) local n=$1; shift; exec ip netns exec "$(ns "$n")" "$@" ;;
        requests) cmd_requests "$1" ;;
        downloads) cmd_downloads "$1" "$2" ;;
        hls) cmd_hls "$1" ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
