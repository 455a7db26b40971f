#!/usr/bin/env bash
# The DR lab: real clients and real servers around lbd, in network namespaces
# this script creates and removes. One implementation, used by `make demo`
# (scripts/demo.sh) and by the end-to-end tests (control/tests/*_lab.rs,
# through testkit/src/lab.rs).
#
#   client 192.0.2.100 ─┐   (and 192.0.2.101: a second address to move to)
#   lbd    192.0.2.1  ──┤ bridge (namespace "sw")
#   be1..4 192.0.2.11-14┘   each owns the VIP 198.51.100.10 on lo and runs nginx
#
# Documentation address ranges only, inside these namespaces only. lbd takes
# the segment with DPDK net_af_packet on a veth; its exception interface
# carries the host's own traffic (health checks, BGP) back onto the segment.
#
# LAB_TOPO=ecmp at `up`: two balancers behind a router instead, each lbd
# announcing the VIP by BGP through its own BIRD (over lbd's exception
# path) to the router's BIRD, which installs one multipath route and
# spreads flows by L4 hash (fib_multipath_hash_policy=1). BFD runs beside
# each BGP session (100 ms x 5), so a crashed lbd's route goes in 500 ms:
#
#   client 203.0.113.100 ── router 203.0.113.1 | 192.0.2.254 ─┐ bridge
#   lbd #1 192.0.2.1, lbd #2 192.0.2.2 (namespaces lb, lb2)  ──┤
#   be1..4 192.0.2.11-14 (default route: the router)         ──┘
#
# LAB_TOPO=tunnel at `up`: the flat segment as above (be1..be4 are DR
# backends on it), plus a router and a second bridge ("br1", also in "sw")
# with backends lbd reaches through tunnels only (issue #18). The router
# forwards between the two and knows no route to the VIP: a packet for the
# VIP gets to be5..be8 encapsulated, or not at all. Replies go from the
# backend's default route (the router) to the client on the segment, never
# through lbd. `up` writes lbd's state file with the route to 10.20.0.0/24.
#
#   client 192.0.2.100, lbd 192.0.2.1, be1..4 192.0.2.11-14 ─┐ br0
#   router 192.0.2.254 ───────────────────────────────────────┘
#   router 10.20.0.254 ──┐ br1
#   be5 10.20.0.15 ──────┤ VXLAN: kernel vx0, VNI 65541, MAC 02:00:00:00:05:01, port 4789
#   be6 10.20.0.16 ──────┤ VXLAN: kernel vx0, VNI 65542, MAC 02:00:00:00:06:01, port 4789
#   be7 10.20.0.17 ──────┤ IPIP: scripts/tundecap.py --ipip (TUN decap0)
#   be8 10.20.0.18 ──────┘ GUE:  scripts/tundecap.py --gue 5555 (TUN decap0)
#
# Each remote backend: default route via 10.20.0.254, the VIP on lo,
# arp_ignore=1/arp_announce=2, rp_filter 0 (all, default, eth0, vx0/decap0:
# the client's packets arrive on the tunnel device and their replies leave
# by eth0). VNIs above 65535 and a GUE port that is not the default (6080)
# catch a field lbd ignores. (`tunnel-backends` prints this table.)
#
# Usage: scripts/lab.sh COMMAND [ARGS]     (LAB_ID names one lab; default "demo";
#                                           LB=2 picks the second lbd in ecmp)
#   up                  namespaces, bridge, addresses, nginx on be1..be4
#                       (in ecmp also the router and its BIRD; in tunnel the
#                       router, br1, be5..be8 with nginx, their vxlan devices
#                       and decapsulators, and lbd's state file)
#   down                stop everything and remove the namespaces (always safe)
#   lbd-start [ARGS]    start lbd (state file kept in the lab), wait for its API
#                       (in ecmp with --bgp-routes, and start its BIRD); ARGS go
#                       to lbd (e.g. --json); LAB_WORKERS=2: two workers on two
#                       queue pairs; LAB_PORT=af_xdp: the segment through
#                       net_af_xdp instead of net_af_packet; LAB_FLOWS=N: flows
#                       per worker (default 65536). Its stdout goes
#                       to lbd.out, stderr to lbd.log
#   lbd-stop            SIGTERM lbd, wait for it; fails unless it exited with 0
#   lbd-kill            SIGKILL lbd (a crash: no withdrawal, no grace); prints the
#                       time of the signal (Unix ms), returns once lbd is gone.
#                       lbd-start restarts it from its state file
#   configure [W1 W2 W3] lbctl: the VIP and be1..be3 with HTTP checks (weights;
#                       LAB_ORDER="3 2 1" adds the backends in another order,
#                       LAB_ORDER=1 only be1)
#   check-options       the health-check timing configure gives (one line of
#                       lbctl options; the demo uses them too)
#   nexthops            (ecmp) the router's next hops for the VIP, one per line
#   nexthops-wait ADDR... (ecmp) until the next hops are exactly ADDR..., polled
#                       every 20 ms (10 s at most); prints when (Unix ms)
#   bgp-sessions [lb]   (ecmp) the router's BGP sessions, "NAME STATE INFO" each
#                       (INFO: "Established", or the last error); with "lb", LB='s
#   bfd-sessions [lb]   (ecmp) the router's BFD sessions, "ADDRESS STATE" each
#                       (Up, Down, Init...); with "lb", those of lbd LB='s BIRD
#   wait-healthy N      until N backends pass their checks
#   metrics             lbd's Prometheus metrics (scraped in its namespace)
#   http PATH           GET PATH on the metrics listener (/healthz, /readyz): body, then the status
#   lbd-reload          SIGHUP to lbd (reload its state file)
#   nginx-stop N | nginx-start N
#   nginx-listen N [ADDR] restart be N's nginx listening on ADDR:80 only (no ADDR:
#                       on every address, as at `up`)
#   udp-echo N PORT     a UDP echo server on be N bound to VIP:PORT (background);
#   udp-echo-stop N     and its end
#   quic-server N ID    quic-peer's QUIC server on be N bound to VIP:4433, issuing
#                       connection IDs with server id ID (hex; LAB_QUIC_ID_LEN
#                       bytes, default 2), answering as "beN", with a TCP
#                       listener on port 4434 (every address) for health checks;
#                       in the background, started when it listens. Every
#                       server shares one stateless-reset key
#   quic-server-stop N  SIGTERM it (no CONNECTION_CLOSE: as if it crashed), wait
#   quic-client ARGS    quic-peer client --connect VIP:4433 ARGS in the client's
#                       namespace (exec: the caller's pid becomes the client's);
#                       see quic-peer/src/main.rs for ARGS and what it prints
#   agent N ANSWER      be N's load-feedback agent (lb-agent, port 10999) answers
#                       ANSWER ("50%", "drain", ...) from now on; started if
#                       not running (background)
#   agent-stop N        and its end
#   lbctl ARGS          lbctl against the lab's lbd
#   exec NS CMD...      run CMD in a namespace: client, lb, sw, be1..be4
#   requests N          N HTTP requests (each its own connection) from the client;
#                       prints one line per request: the serving backend or "FAILED"
#   connects N          as requests, each line "SECONDS BACKEND": curl's time to
#                       connect (a lost SYN costs 1 s); "0.000 FAILED" for a failure
#   port-requests P N   N requests from the client's source ports P..P+N-1 (in
#                       order, within 40000-44999, reserved for it); prints
#                       "port backend" (or "port FAILED:reason") each
#   downloads N RATE    N parallel downloads of /large at RATE (curl --limit-rate);
#                       prints "connected K" once all N have connected (K < N
#                       after 20 s without), then "exit code size backend" per
#                       download when all end
#   hls SECONDS         fetch the playlist and its segments in a loop (one retry
#                       per fetch); prints "fetches N failed M"
#   upload MB NAME      (any topology) PUT MB MiB of random data from the client to
#                       http://VIP/upload/NAME (nginx's dav module writes it to
#                       the serving backend's $DIR/beN/upload/NAME); prints
#                       "code bytes_sent backend sha256" (the sha256 of what was sent)
# Tunnel topology only:
#   tunnel-backends     one line per remote backend: "name addr method mac vni port"
#                       ("-" where a field does not apply)
#   tunnel-state beN[:W]...  write lbd's state file: local address, the route to
#                       10.20.0.0/24 via the router, the VIP with these backends
#                       (any of be1..be8, weight W, default 1) and HTTP checks with
#                       the lab's timing; a running lbd reloads it (SIGHUP) and
#                       this waits until lbd holds exactly these backends
#   decap N [ARGS]      (re)start tundecap.py on be N in the background (ARGS:
#                       --ipip / --gue PORT; default: what the table says), wait
#                       until it is ready
#   decap-stop N        and its end
#   decap-counts N      its counts now (one line: "KIND N ...")
#   decap-selftest N    without lbd: send a hand-crafted encapsulated SYN for
#                       VIP:80 from the router to be N (IPIP, GUE or VXLAN as the
#                       table says) and wait for the SYN-ACK from the VIP at the
#                       client; fails unless it comes, or if be N answered the
#                       tunnel packet with ICMP
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ID=${LAB_ID:-demo}
DIR=${LAB_DIR:-/tmp/lblab-$ID}
LBD=${LBD:-$ROOT/target/debug/lbd}
LBCTL=${LBCTL:-$ROOT/target/debug/lbctl}
LB_AGENT=${LB_AGENT:-$ROOT/target/debug/lb-agent}
QUIC_PEER=${QUIC_PEER:-$ROOT/target/debug/quic-peer}

VIP=198.51.100.10
VIP_PORT=80
QUIC_PORT=4433
QUIC_CHECK_PORT=4434
# One stateless-reset key for every QUIC server: a server's reset of a
# connection it does not know (another's, while that one is down) is then
# one its client believes.
QUIC_RESET_KEY=6c61622d72657365742d6b6579
LB=${LB:-1}
[[ "$LB" =~ ^[12]$ ]] || { echo "lab: LB=$LB: give 1 or 2" >&2; exit 2; }
SFX=${LB/#1/}           # instance 1 keeps the plain names: lb, lbd.sock
LOCAL=192.0.2.$LB
ROUTER=192.0.2.254
NS_PREFIX=lb$ID
# The backends' health checks (configure, and the demo through check-options).
# Fast for tests, but not trigger-happy: on a loaded 2-core machine a check
# can wait 150 ms for a core, and a backend marked down loses its streams.
# Detection within fall x interval + timeout, 790 ms.
CHECK_OPTIONS=(--interval 200 --timeout 190 --rise 2 --fall 3)
# Two instances (ecmp) must agree on health to agree on placement: a
# slower, steadier check, so that a loaded 2-core machine does not flap one.
ECMP_CHECK_OPTIONS=(--interval 500 --timeout 450 --rise 2 --fall 3)
METRICS=127.0.0.1:9100  # lbd's metrics, inside its namespace
LARGE_MB=${LAB_LARGE_MB:-8}
FIXED_PORTS=40000-44999  # the client's source ports for port-requests
# The tunnel topology's second segment and its backends.
TUN_NET=10.20.0
TUN_ROUTER=$TUN_NET.254
TUN_BACKENDS=(5 6 7 8)
GUE_PORT=5555

ns() { echo "$NS_PREFIX-$1"; }
topo() { cat "$DIR/topo" 2>/dev/null || echo flat; }
client_ip() { if [ "$(topo)" = ecmp ]; then echo 203.0.113.100; else echo 192.0.2.100; fi; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
backend_ip() { if [ "$1" -le 4 ]; then echo "192.0.2.$((10 + $1))"; else echo "$TUN_NET.$((10 + $1))"; fi; }
die() { echo "lab: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces)"; }

cmd_down() {
    local pidf
    for pidf in "$DIR/lbd.pid" "$DIR/lbd2.pid"; do
        [ -f "$pidf" ] || continue
        # A second signal skips lbd's grace period.
        kill -TERM "$(cat "$pidf")" 2>/dev/null && sleep 0.1 &&
            kill -TERM "$(cat "$pidf")" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$(cat "$pidf")" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$(cat "$pidf")" 2>/dev/null || true
    done
    for i in 1 2 3 4 5 6 7 8; do
        [ -f "$DIR/be$i/nginx.pid" ] && kill -TERM "$(cat "$DIR/be$i/nginx.pid")" 2>/dev/null || true
    done
    for n in client router lb lb2 be1 be2 be3 be4 be5 be6 be7 be8 sw; do
        # Whatever still runs in the namespace goes with it.
        if ip netns pids "$(ns $n)" >/dev/null 2>&1; then
            ip netns pids "$(ns $n)" | xargs -r kill -KILL 2>/dev/null || true
            ip netns del "$(ns $n)" 2>/dev/null || true
        fi
    done
    rm -rf "$DIR"
}

nginx_conf() {
    local i=$1 listen=${2:-80}
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
        listen $listen reuseport;
        root $DIR/www;
        add_header X-Backend be$i always;
        location = /name { add_header X-Backend be$i always; return 200 "be$i\n"; }
        # Uploads (lab.sh upload): PUT writes the body to this backend's
        # own directory, so a test can check that all of it arrived.
        location /upload/ {
            root $DIR/be$i;
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 64m;
        }
    }
}
EOF
}

cmd_up() {
    need_root
    command -v nginx >/dev/null || die "nginx is missing: run scripts/setup.sh"
    local topo=${LAB_TOPO:-flat}
    case "$topo" in flat | ecmp | tunnel) ;; *) die "LAB_TOPO=$topo: flat, ecmp or tunnel" ;; esac
    [ "$topo" != ecmp ] || command -v bird >/dev/null || die "bird is missing: run scripts/setup.sh"
    cmd_down
    mkdir -p "$DIR/www/hls"
    echo "$topo" > "$DIR/topo"
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

    local spaces=(sw client lb be1 be2 be3 be4)
    [ "$topo" != ecmp ] || spaces+=(router lb2)
    [ "$topo" != tunnel ] || spaces+=(router be5 be6 be7 be8)
    for n in "${spaces[@]}"; do
        ip netns add "$(ns $n)"
        in_ns "$n" ip link set lo up
    done
    # port-requests binds these source ports itself: no connect() may take
    # one as its ephemeral port (CI once saw 12 of 50 downloads land there).
    in_ns client sysctl -qw net.ipv4.ip_local_reserved_ports="$FIXED_PORTS"
    in_ns sw ip link add br0 type bridge
    in_ns sw ip link set br0 up
    attach() { # namespace, its interface name[, bridge: br0 or br1]
        local br=${3:-br0} port="p-$1"
        [ "$br" = br0 ] || port="q-$1"
        in_ns sw ip link add "$port" type veth peer name "$2" netns "$(ns "$1")"
        in_ns sw ip link set "$port" master "$br" up
        in_ns "$1" ip link set "$2" up
        # veth TX checksum offload leaves partial checksums, broken once a
        # frame has crossed DPDK.
        in_ns "$1" ethtool -K "$2" tx off >/dev/null
    }
    attach lb data0
    if [ "$topo" != ecmp ]; then
        attach client eth0
        in_ns client ip addr add "$(client_ip)/24" dev eth0
        # A second address, for a client that moves (QUIC migration).
        in_ns client ip addr add 192.0.2.101/24 dev eth0
        # The VIP is reached through the segment (where a router would send it).
        in_ns client ip route add "$VIP/32" dev eth0
    else
        attach lb2 data0
        router_up
    fi
    for i in 1 2 3 4; do
        attach "be$i" eth0
        in_ns "be$i" ip addr add "$(backend_ip "$i")/24" dev eth0
        # Replies go straight to the client, through the router if there is one.
        [ "$topo" != ecmp ] || in_ns "be$i" ip route add default via "$ROUTER"
        # Classic DR: the VIP on lo, never answered for on the segment.
        in_ns "be$i" ip addr add "$VIP/32" dev lo
        in_ns "be$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        mkdir -p "$DIR/be$i/tmp"
        nginx_conf "$i" > "$DIR/be$i/nginx.conf"
        cmd_nginx_start "$i"
    done
    if [ "$topo" = tunnel ]; then
        tunnel_up
        echo "lab $ID up ($topo): client $(client_ip), backends 192.0.2.11-14," \
            "tunnelled $TUN_NET.15-18 via $ROUTER, VIP $VIP:$VIP_PORT/tcp"
    else
        echo "lab $ID up ($topo): client $(client_ip), backends 192.0.2.11-14, VIP $VIP:$VIP_PORT/tcp"
    fi
}

# be N of the tunnel topology: "name addr method mac vni port", "-" where
# a field does not apply.
tunnel_backend() {
    case "$1" in
        5) echo "be5 $TUN_NET.15 vxlan 02:00:00:00:05:01 65541 4789" ;;
        6) echo "be6 $TUN_NET.16 vxlan 02:00:00:00:06:01 65542 4789" ;;
        7) echo "be7 $TUN_NET.17 ipip - - -" ;;
        8) echo "be8 $TUN_NET.18 gue - - $GUE_PORT" ;;
        *) die "be$1 is no tunnelled backend (be5..be8)" ;;
    esac
}

cmd_tunnel_backends() {
    [ "$(topo)" = tunnel ] || die "tunnel-backends: the lab is $(topo), not tunnel"
    for i in "${TUN_BACKENDS[@]}"; do tunnel_backend "$i"; done
}

# The router between the segment and 10.20.0.0/24, and be5..be8 behind it.
tunnel_up() {
    in_ns sw ip link add br1 type bridge
    in_ns sw ip link set br1 up
    attach router eth0
    attach router eth1 br1
    in_ns router ip addr add "$ROUTER/24" dev eth0
    in_ns router ip addr add "$TUN_ROUTER/24" dev eth1
    in_ns router sysctl -qw net.ipv4.ip_forward=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0
    # The router must not know the VIP: it reaches be5..be8 through tunnels only.
    if in_ns router ip route get "$VIP" >/dev/null 2>&1; then
        die "the router has a route to the VIP: $(in_ns router ip route get "$VIP")"
    fi
    local i name addr method mac vni port
    for i in "${TUN_BACKENDS[@]}"; do
        read -r name addr method mac vni port <<< "$(tunnel_backend "$i")"
        attach "$name" eth0 br1
        in_ns "$name" ip addr add "$addr/24" dev eth0
        in_ns "$name" ip route add default via "$TUN_ROUTER"
        in_ns "$name" ip addr add "$VIP/32" dev lo
        in_ns "$name" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            net.ipv4.conf.eth0.rp_filter=0
        mkdir -p "$DIR/$name/tmp"
        case "$method" in
            vxlan)
                # The kernel's own VXLAN: lbd's inner frame goes to this MAC.
                in_ns "$name" ip link add vx0 address "$mac" type vxlan id "$vni" \
                    local "$addr" dstport "$port" nolearning
                in_ns "$name" sysctl -qw net.ipv4.conf.vx0.rp_filter=0
                in_ns "$name" ip link set vx0 up
                ;;
            ipip | gue) cmd_decap "$i" ;;
        esac
        nginx_conf "$i" > "$DIR/$name/nginx.conf"
        cmd_nginx_start "$i"
    done
    # lbd's state file (lbd-start keeps it): the route to the second segment.
    tunnel_state_file > "$DIR/state.toml"
}

# lbd's state file for the tunnel topology: the local address, the route,
# and the VIP with the backends given ("beN" or "beN:WEIGHT"), if any.
tunnel_state_file() {
    echo "local_addresses = [\"$LOCAL\"]"
    echo
    echo "[[route]]"
    echo "prefix = \"$TUN_NET.0/24\""
    echo "gateway = \"$ROUTER\""
    [ $# -gt 0 ] || return 0
    local interval timeout rise fall
    read -r _ interval _ timeout _ rise _ fall <<< "${CHECK_OPTIONS[*]}"
    echo
    echo "[[vip]]"
    echo "address = \"$VIP\""
    echo "port = $VIP_PORT"
    echo "protocol = \"tcp\""
    local spec i weight name addr method mac vni port
    for spec in "$@"; do
        [[ "$spec" =~ ^be([1-8])(:([0-9]+))?$ ]] || die "tunnel-state: $spec: give beN or beN:WEIGHT"
        i=${BASH_REMATCH[1]} weight=${BASH_REMATCH[3]:-1}
        echo
        echo "[[vip.backend]]"
        echo "address = \"$(backend_ip "$i")\""
        echo "weight = $weight"
        if [ "$i" -ge 5 ]; then
            read -r name addr method mac vni port <<< "$(tunnel_backend "$i")"
            echo "forward = \"$method\""
            case "$method" in
                # The default VXLAN port: left out, so the default is what is used.
                vxlan) echo "vni = $vni"; echo "mac = \"$mac\"" ;;
                gue) echo "tunnel_port = $port" ;;
            esac
        fi
        echo
        echo "[vip.backend.check]"
        echo "kind = \"http:/name\""
        echo "interval_ms = $interval"
        echo "timeout_ms = $timeout"
        echo "rise = $rise"
        echo "fall = $fall"
    done
}

lbd_running() { [ -f "$DIR/lbd$SFX.pid" ] && kill -0 "$(cat "$DIR/lbd$SFX.pid")" 2>/dev/null; }

cmd_tunnel_state() {
    [ "$(topo)" = tunnel ] || die "tunnel-state: the lab is $(topo), not tunnel"
    local state="$DIR/state$SFX.toml"
    tunnel_state_file "$@" > "$state.new"
    mv "$state.new" "$state"
    lbd_running || return 0
    local log="$DIR/lbd$SFX.log" mark
    mark=$(wc -l < "$log")
    cmd_lbd_reload
    # Until lbd holds exactly these backends (the monitor takes SIGHUP
    # within a second).
    local want=() spec have
    for spec in "$@"; do want+=("$(backend_ip "${spec:2:1}")"); done
    want=$(printf '%s\n' "${want[@]}" | sort)
    for _ in $(seq 100); do
        have=$(cmd_lbctl export 2>/dev/null | python3 -c '
import sys, tomllib
for v in tomllib.loads(sys.stdin.read()).get("vip", []):
    for b in v.get("backend", []):
        print(b["address"])' 2>/dev/null | sort || true)
        [ "$have" = "$want" ] && return 0
        if tail -n +"$((mark + 1))" "$log" | grep -q "reload refused"; then
            tail -n +"$((mark + 1))" "$log" >&2
            die "lbd refused the state file $state"
        fi
        sleep 0.1
    done
    tail -n +"$((mark + 1))" "$log" >&2
    die "lbd holds backends [$(echo $have)], not [$(echo $want)], 10 s after the reload"
}

cmd_decap() {
    local i=$1 name method port args
    shift
    read -r name _ method _ _ port <<< "$(tunnel_backend "$i")"
    args=("$@")
    if [ ${#args[@]} = 0 ]; then
        case "$method" in
            ipip) args=(--ipip) ;;
            gue) args=(--gue "$port") ;;
            *) die "decap: $name is a $method backend" ;;
        esac
    fi
    cmd_decap_stop "$i"
    local log="$DIR/$name/decap.log"
    : > "$log"
    # Not through in_ns: $! must be python itself (ip netns exec execs it).
    ip netns exec "$(ns "$name")" python3 -u "$ROOT/scripts/tundecap.py" "${args[@]}" \
        </dev/null >>"$log" 2>&1 &
    echo $! > "$DIR/$name/decap.pid"
    for _ in $(seq 100); do
        grep -q "^tundecap: ready" "$log" && return 0
        kill -0 "$(cat "$DIR/$name/decap.pid")" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log" >&2
    die "tundecap on $name did not start"
}

cmd_decap_stop() {
    local pidf="$DIR/be$1/decap.pid" pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$pidf"
}

cmd_decap_counts() {
    local log="$DIR/be$1/decap.log" n
    [ -f "$DIR/be$1/decap.pid" ] || die "decap-counts: no tundecap on be$1"
    n=$(grep -c "^tundecap: counts" "$log" || true)
    kill -USR1 "$(cat "$DIR/be$1/decap.pid")"
    for _ in $(seq 50); do
        [ "$(grep -c "^tundecap: counts" "$log" || true)" -gt "$n" ] && break
        sleep 0.05
    done
    grep "^tundecap: counts" "$log" | tail -1 | sed 's/^tundecap: counts: //'
}

cmd_decap_selftest() {
    [ "$(topo)" = tunnel ] || die "decap-selftest: the lab is $(topo), not tunnel"
    local i=$1 name addr method mac vni port how=() sport=$((45000 + $1)) cap icmp
    read -r name addr method mac vni port <<< "$(tunnel_backend "$i")"
    case "$method" in
        ipip) how=(--method ipip) ;;
        gue) how=(--method gue --port "$port") ;;
        vxlan) how=(--method vxlan --vni "$vni" --mac "$mac" --port "$port") ;;
    esac
    cap=$(mktemp -d)
    # The SYN-ACK at the client; any ICMP the backend sends back at the router.
    in_ns client timeout 5 tcpdump --immediate-mode -l -n -c 1 -i eth0 \
        "src host $VIP and tcp src port $VIP_PORT and dst port $sport and tcp[tcpflags] & (tcp-syn|tcp-ack) = (tcp-syn|tcp-ack)" \
        > "$cap/synack" 2> "$cap/synack.err" &
    local synack=$!
    in_ns router timeout 2 tcpdump --immediate-mode -l -n -i eth1 "icmp and src host $addr" \
        > "$cap/icmp" 2> "$cap/icmp.err" &
    local icmp_pid=$!
    for _ in $(seq 50); do
        grep -q listening "$cap/synack.err" && grep -q listening "$cap/icmp.err" && break
        sleep 0.05
    done
    in_ns router python3 "$ROOT/scripts/tundecap.py" send-syn "${how[@]}" --to "$addr" \
        --source "$TUN_ROUTER" --client "$(client_ip)" --vip "$VIP" --sport "$sport"
    local rc=0
    wait "$synack" || rc=$?
    wait "$icmp_pid" || true
    icmp=$(cat "$cap/icmp")
    local got
    got=$(cat "$cap/synack")
    rm -rf "$cap"
    [ "$rc" = 0 ] && [ -n "$got" ] || die "decap-selftest $name ($method): no SYN-ACK from $VIP at the client"
    [ -z "$icmp" ] || die "decap-selftest $name ($method): the backend sent ICMP: $icmp"
    echo "$name $method: $got"
}

# BGP timers for a lab: a session is dead after 3 s and reconnects in 1 s.
BGP_TIMERS="hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;"
# BFD beside every BGP session (bfd on): a balancer that dies (its tap, and
# so its BFD packets, gone with lbd) takes its routes down after
# interval x multiplier, 500 ms, not after the BGP hold time. Not 3: these
# shared 2-core VMs were seen to pass no packet at all for 300 ms (both
# directions, every session at once), and a flap drops a balancer's route
# for the seconds BGP takes to come back.
BFD_TIMERS="interval 100 ms; multiplier 5;"

router_up() {
    in_ns sw ip link add p-router type veth peer name eth0 netns "$(ns router)"
    in_ns sw ip link set p-router master br0 up
    in_ns router ip link set eth0 up
    in_ns router ip addr add "$ROUTER/24" dev eth0
    in_ns router ip link add eth1 type veth peer name eth0 netns "$(ns client)"
    in_ns router ip link set eth1 up
    in_ns router ip addr add 203.0.113.1/24 dev eth1
    in_ns client ip link set eth0 up
    # Full checksums from every sender whose frames may cross DPDK (attach).
    for dev in eth0 eth1; do in_ns router ethtool -K "$dev" tx off >/dev/null; done
    in_ns client ethtool -K eth0 tx off >/dev/null
    in_ns client ip addr add "$(client_ip)/24" dev eth0
    in_ns client ip route add default via 203.0.113.1
    # One L4 hash per flow over the balancers, as ECMP routers do.
    in_ns router sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    mkdir -p "$DIR/router"
    cat > "$DIR/router/bird.conf" <<CONF
router id $ROUTER;
log "$DIR/router/bird.log" all;
protocol device { scan time 1; }
# (Session changes logged: the lab's bird.log tells a flap from a crash.)
protocol bfd { interface "eth0" { $BFD_TIMERS }; debug { events }; }
# Equal BGP paths from the balancers become one multipath kernel route.
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
template bgp balancer {
    local $ROUTER as 65000;
    $BGP_TIMERS
    # Not "graceful": a dead balancer's routes must go, not be kept stale.
    bfd on;
    debug { states };
    ipv4 { import all; export none; };
}
protocol bgp lb1 from balancer { neighbor 192.0.2.1 as 65001; }
protocol bgp lb2 from balancer { neighbor 192.0.2.2 as 65001; }
CONF
    in_ns router bird -c "$DIR/router/bird.conf" -s "$DIR/router/bird.ctl" \
        -P "$DIR/router/bird.pid" </dev/null >/dev/null 2>>"$DIR/router/bird.err" ||
        die "bird in the router: $(cat "$DIR/router/bird.err")"
}

# The balancer's own BIRD: one eBGP session to the router over lbd's
# exception interface, exporting what lbd writes to --bgp-routes.
lb_bird_start() {
    local d="$DIR/lb$LB"
    [ -f "$d/bird.pid" ] && kill -0 "$(cat "$d/bird.pid")" 2>/dev/null && return 0
    cat > "$d/bird.conf" <<CONF
router id $LOCAL;
log "$d/bird.log" all;
protocol device { scan time 1; }
protocol bfd { interface "lbk0" { $BFD_TIMERS }; }
include "$d/vips.conf";
protocol bgp uplink {
    local $LOCAL as 65001;
    neighbor $ROUTER as 65000;
    $BGP_TIMERS
    bfd on;
    ipv4 { import none; export where source = RTS_STATIC; };
}
CONF
    in_ns "lb$SFX" bird -c "$d/bird.conf" -s "$d/bird.ctl" -P "$d/bird.pid" \
        </dev/null >/dev/null 2>>"$d/bird.err" || die "bird in lb$SFX: $(cat "$d/bird.err")"
}

# BFD sessions as one BIRD sees them, "ADDRESS STATE" per line: the router's
# (default) or, with "lb", the balancer's (LB=).
cmd_bfd_sessions() {
    local ctl
    case "${1:-router}" in
        router) ctl="$DIR/router/bird.ctl" ;;
        lb) ctl="$DIR/lb$LB/bird.ctl" ;;
        *) die "bfd-sessions: router or lb, not $1" ;;
    esac
    birdc -s "$ctl" show bfd sessions | awk '$1 ~ /^[0-9.]+$/ {print $1, $3}' | sort
}

# The BGP sessions as one BIRD sees them (router or "lb", as bfd-sessions),
# "NAME STATE INFO" per line: "lb2 start Connect Error: BFD session down".
cmd_bgp_sessions() {
    local ctl
    case "${1:-router}" in
        router) ctl="$DIR/router/bird.ctl" ;;
        lb) ctl="$DIR/lb$LB/bird.ctl" ;;
        *) die "bgp-sessions: router or lb, not $1" ;;
    esac
    birdc -s "$ctl" show protocols | awk '$2 == "BGP" {$2 = $3 = $5 = ""; print}' | tr -s ' ' | sort
}

# Until the router's next hops for the VIP are exactly ADDR..., polled every
# 20 ms (the test's own polls, through this script, take 100 ms on a busy
# machine); prints when it saw them (Unix ms).
cmd_nexthops_wait() {
    local want have
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    for _ in $(seq 500); do
        have=$(cmd_nexthops | tr '\n' ' ')
        [ "$have" = "$want" ] && { date +%s%3N; return 0; }
        sleep 0.02
    done
    die "nexthops-wait: the router's next hops are [$have], not [$want], after 10 s"
}

cmd_nexthops() {
    # "via A" for one path; "nexthop via A ..." per path for several.
    in_ns router ip -4 route show "$VIP/32" | { grep -o 'via [0-9.]*' || true; } | awk '{print $2}' | sort
}

cmd_nginx_start() {
    # The daemon must not keep our stdout open (callers read it to the end).
    in_ns "be$1" nginx -c "$DIR/be$1/nginx.conf" -e "$DIR/be$1/error.log" \
        </dev/null >/dev/null 2>>"$DIR/be$1/error.log"
}

cmd_nginx_listen() {
    local i=$1 addr=${2:-}
    cmd_nginx_stop "$i"
    nginx_conf "$i" "${addr:+$addr:}80" > "$DIR/be$i/nginx.conf"
    cmd_nginx_start "$i"
}

cmd_udp_echo() {
    local i=$1 port=$2
    cmd_udp_echo_stop "$i"
    # From the VIP, as a DR backend answers (the socket is bound to it).
    # Not through in_ns: $! must be python itself (ip netns exec execs it).
    ip netns exec "$(ns "be$i")" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
' "$VIP" "$port" </dev/null >/dev/null 2>>"$DIR/be$i/udp-echo.log" &
    echo $! > "$DIR/be$i/udp-echo.pid"
}

cmd_udp_echo_stop() {
    local pidf="$DIR/be$1/udp-echo.pid"
    [ -f "$pidf" ] || return 0
    kill -TERM "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
}

# Whether process $1 runs (exists and is no zombie).
running() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

cmd_quic_server() {
    local i=$1 id=$2 log="$DIR/be$1/quic.log"
    [ -x "$QUIC_PEER" ] || die "quic-server: $QUIC_PEER is missing (cargo build --workspace builds it)"
    cmd_quic_server_stop "$i"
    : > "$log"
    # Not through in_ns: $! must be quic-peer itself (ip netns exec execs it).
    ip netns exec "$(ns "be$i")" "$QUIC_PEER" server --listen "$VIP:$QUIC_PORT" \
        --server-id "$id" --id-len "${LAB_QUIC_ID_LEN:-2}" --name "be$i" \
        --tcp-check "0.0.0.0:$QUIC_CHECK_PORT" --reset-key "$QUIC_RESET_KEY" \
        </dev/null >>"$log" 2>&1 &
    echo $! > "$DIR/be$i/quic.pid"
    for _ in $(seq 100); do
        grep -q "listening on" "$log" && return 0
        running "$(cat "$DIR/be$i/quic.pid")" || break
        sleep 0.05
    done
    cat "$log" >&2
    die "quic-peer server on be$i did not start"
}

cmd_quic_server_stop() {
    local pidf="$DIR/be$1/quic.pid" pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    kill -TERM "$pid" 2>/dev/null || true
    # Gone, or a zombie: its parent (the shell that started it) has exited,
    # and whoever inherits it may reap it late.
    for _ in $(seq 50); do
        running "$pid" || break
        sleep 0.05
    done
    running "$pid" && die "quic-peer server on be$1 did not stop"
    rm -f "$pidf"
}

cmd_agent() {
    local i=$1 answer=$2 pidf="$DIR/be$1/agent.pid"
    [ -x "$LB_AGENT" ] || die "agent: $LB_AGENT is missing (cargo build --workspace builds it)"
    printf '%s\n' "$answer" > "$DIR/be$i/agent.load.new"
    mv "$DIR/be$i/agent.load.new" "$DIR/be$i/agent.load"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        return 0
    fi
    # Not through in_ns: $! must be the agent itself (ip netns exec execs it).
    ip netns exec "$(ns "be$i")" "$LB_AGENT" --listen 0.0.0.0:10999 \
        --file "$DIR/be$i/agent.load" </dev/null >/dev/null 2>>"$DIR/be$i/agent.log" &
    echo $! > "$pidf"
}

cmd_agent_stop() {
    local pidf="$DIR/be$1/agent.pid"
    [ -f "$pidf" ] || return 0
    kill -TERM "$(cat "$pidf")" 2>/dev/null || true
    rm -f "$pidf"
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
    local state="$DIR/state$SFX.toml" sock="$DIR/lbd$SFX.sock" pidf="$DIR/lbd$SFX.pid"
    local log="$DIR/lbd$SFX.log" out="$DIR/lbd$SFX.out" rcf="$DIR/lbd$SFX.rc"
    local memory bgp=() main=0 core=1 workers=${LAB_WORKERS:-1} lcores pid
    [[ "$workers" =~ ^[12]$ ]] || die "LAB_WORKERS=$workers: give 1 or 2"
    local vdev
    case "${LAB_PORT:-af_packet}" in
        af_packet) vdev="net_af_packet0,iface=data0,qpairs=$workers" ;;
        # An XDP socket per queue on the veth (generic XDP), as on a cloud VM's NIC.
        af_xdp) vdev="net_af_xdp0,iface=data0,queue_count=$workers" ;;
        *) die "LAB_PORT=$LAB_PORT: af_packet or af_xdp" ;;
    esac
    [ -f "$state" ] || echo "local_addresses = [\"$LOCAL\"]" > "$state"
    rm -f "$sock" "$pidf" "$rcf"
    memory=$(eal_memory)
    if [ "$(topo)" = ecmp ]; then
        mkdir -p "$DIR/lb$LB"
        bgp=(--bgp-routes "$DIR/lb$LB/vips.conf"
            --bgp-reload "birdc -s $DIR/lb$LB/bird.ctl configure")
        # Each instance busy-polls its own core.
        [ "$LB" = 1 ] || { main=1; core=0; }
    fi
    # The main lcore on one core, the workers (one queue pair each) on the other.
    lcores=0@$main
    for w in $(seq "$workers"); do lcores+=",$w@$core"; done
    # The subshell waits for lbd and keeps its exit status for lbd-stop.
    # shellcheck disable=SC2086  # memory is two words at most
    (
        rc=0
        ip netns exec "$(ns "lb$SFX")" sh -c 'echo $$ > "$0"; exec "$@"' "$pidf" \
            "$LBD" --lcores "$lcores" --no-pci --file-prefix "lblab-$ID-$LB" -m 256 $memory \
            --log-level lib.eal:warning --vdev "$vdev" \
            -- --port "${vdev%%,*}" --state "$state" --kernel-iface lbk0 \
            --grpc-socket "$sock" --metrics-listen "$METRICS" --flows "${LAB_FLOWS:-65536}" \
            "${bgp[@]}" "$@" </dev/null > "$out" 2>> "$log" || rc=$?
        echo "$rc" > "$rcf"
    ) </dev/null >/dev/null 2>&1 &
    # The host's address on the segment, behind the exception path, as soon
    # as lbd has made the interface: the health checks start with lbd and
    # leave through it (three failed checks take a backend down, and a
    # restarted lbd whose host cannot reach them loses every flow).
    local iface=
    for _ in $(seq 1000); do
        if [ -z "$iface" ] && in_ns "lb$SFX" ip link show lbk0 >/dev/null 2>&1; then
            # A lost first ARP request for a backend is retried well within
            # fall x interval, not after the kernel's default second.
            in_ns "lb$SFX" sysctl -qw net.ipv4.neigh.lbk0.retrans_time_ms=100
            in_ns "lb$SFX" ip link set lbk0 up
            in_ns "lb$SFX" ip addr replace "$LOCAL/24" dev lbk0
            # The host's checks of a tunnelled backend's own address.
            [ "$(topo)" != tunnel ] ||
                in_ns "lb$SFX" ip route replace "$TUN_NET.0/24" via "$ROUTER" dev lbk0
            iface=up
        fi
        if [ -n "$iface" ] && [ -S "$sock" ] && "$LBCTL" --socket "$sock" info >/dev/null 2>&1; then
            in_ns "lb$SFX" ip link set lbk0 up
            [ "$(topo)" != ecmp ] || lb_bird_start
            return 0
        fi
        # The pid file is written by the starting shell: until it holds a
        # pid (it may exist and still be empty), lbd is starting, not gone.
        pid=$(cat "$pidf" 2>/dev/null || true)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log" >&2
            die "lbd exited"
        fi
        sleep 0.02
    done
    tail -20 "$log" >&2
    die "lbd did not serve its API within 20 s"
}

cmd_lbd_stop() {
    local pid rcf="$DIR/lbd$SFX.rc" rc
    pid=$(cat "$DIR/lbd$SFX.pid")
    kill -TERM "$pid"
    # With BGP, lbd forwards for its grace period (3 s) after withdrawing.
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "lbd did not stop within 15 s"
    rm -f "$DIR/lbd$SFX.pid"
    # Its exit status, from the shell that started it.
    for _ in $(seq 50); do
        [ -s "$rcf" ] && break
        sleep 0.1
    done
    rc=$(cat "$rcf" 2>/dev/null || echo unknown)
    [ "$rc" = 0 ] || { tail -20 "$DIR/lbd$SFX.log" >&2; die "lbd exited with status $rc"; }
}

# A crash: SIGKILL, no withdrawal, no grace. Prints the time of the signal
# (Unix ms), then waits until the process is gone.
cmd_lbd_kill() {
    local pid pidf="$DIR/lbd$SFX.pid"
    pid=$(cat "$pidf")
    kill -KILL "$pid"
    date +%s%3N
    for _ in $(seq 100); do
        running "$pid" || break
        sleep 0.05
    done
    running "$pid" && die "lbd ($pid) still runs 5 s after SIGKILL"
    rm -f "$pidf"
}

cmd_lbctl() { "$LBCTL" --socket "$DIR/lbd$SFX.sock" "$@"; }

cmd_check_options() {
    if [ "$(topo)" != ecmp ]; then echo "${CHECK_OPTIONS[*]}"; else echo "${ECMP_CHECK_OPTIONS[*]}"; fi
}

cmd_configure() {
    local weights=("${1:-1}" "${2:-1}" "${3:-1}") check
    read -ra check <<< "--check http:/name $(cmd_check_options)"
    cmd_lbctl vip add "$VIP:$VIP_PORT/tcp"
    for i in ${LAB_ORDER:-1 2 3}; do
        cmd_lbctl backend add "$VIP:$VIP_PORT/tcp" "$(backend_ip "$i")" \
            --weight "${weights[$((i - 1))]}" "${check[@]}"
    done
}

cmd_port_requests() {
    local lo=${FIXED_PORTS%-*} hi=${FIXED_PORTS#*-}
    [ "$1" -ge "$lo" ] && [ $(($1 + $2 - 1)) -le "$hi" ] ||
        die "port-requests: ports $1..$(($1 + $2 - 1)) outside the reserved $FIXED_PORTS"
    # SO_REUSEADDR + tcp_tw_reuse: a port may still be in TIME_WAIT from
    # its last request (whichever side closed first).
    in_ns client sysctl -qw net.ipv4.tcp_tw_reuse=1
    in_ns client python3 - "$VIP" "$1" "$2" <<'CLIENT'
import socket, sys
vip, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for port in range(first, first + n):
    backend = "FAILED"
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(5)
        s.bind(("", port))
        s.connect((vip, 80))
        s.sendall(b"GET /name HTTP/1.0\r\nHost: lab\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        s.close()
        for line in reply.decode(errors="replace").splitlines():
            if line.lower().startswith("x-backend:"):
                backend = line.split(":", 1)[1].strip()
    except OSError as e:
        backend = f"FAILED:{e.__class__.__name__}({e.strerror or e})"
    print(port, backend, flush=True)
CLIENT
}

cmd_wait_healthy() {
    for _ in $(seq 200); do
        [ "$(cmd_lbctl health | grep -cw healthy || true)" -ge "$1" ] && return 0
        sleep 0.1
    done
    cmd_lbctl health >&2
    die "fewer than $1 healthy backends after 20 s"
}

cmd_metrics() { in_ns "lb$SFX" curl -sf "http://$METRICS/metrics"; }
# "CODE BODY" of GET PATH on the metrics listener (/healthz, /readyz).
cmd_http() { in_ns "lb$SFX" curl -s --max-time 5 -w ' %{http_code}' "http://$METRICS$1"; }
cmd_lbd_reload() { kill -HUP "$(cat "$DIR/lbd$SFX.pid")"; }

cmd_requests() {
    # URL globbing: one curl, N requests, each on its own connection (the
    # servers close after every response), so each gets a new source port.
    in_ns client curl -s --max-time 5 -o /dev/null -w '%header{x-backend}\n' \
        "http://$VIP/name?r=[1-$1]" | sed 's/^$/FAILED/'
}

cmd_connects() {
    # As requests, with curl's time to connect (seconds) before each backend.
    in_ns client curl -s --max-time 5 -o /dev/null -w '%{time_connect} %header{x-backend}\n' \
        "http://$VIP/name?c=[1-$1]" | awk 'NF < 2 {print $1, "FAILED"; next} {print}' || true
}

cmd_downloads() {
    local n=$1 rate=$2 out connected=0 pids=()
    out=$(mktemp -d)
    for i in $(seq "$n"); do
        # --speed-limit/--speed-time: a download stalled 15 s counts as failed.
        # The trace (-v) says when this one has connected.
        in_ns client curl -s -v -o /dev/null --limit-rate "$rate" --speed-limit 1000 \
            --speed-time 15 -w '%{http_code} %{size_download} %header{x-backend}\n' \
            "http://$VIP/large?d=$i" > "$out/$i.out" 2> "$out/$i.trace" &
        pids+=("$!")
    done
    # Each download's own "Connected to", not a count of sockets at one
    # moment: a slow machine starting the curls one by one may never have
    # them all open at once.
    for _ in $(seq 200); do
        connected=$(cat "$out"/*.trace | grep -c '^\* Connected to' || true)
        [ "$connected" -ge "$n" ] && break
        sleep 0.1
    done
    echo "connected $connected"
    if [ "$connected" -lt "$n" ]; then
        echo "lab: $connected of $n downloads connected after 20 s; client sockets to the VIP:" >&2
        in_ns client ss -tan dst "$VIP" | awk '{print $1}' | sort | uniq -c >&2
        for t in "$out"/*.trace; do
            grep -qs '^\* Connected to' "$t" || { echo "--- ${t##*/}:"; tail -n 5 "$t"; } >&2
        done
    fi
    # Each download's own pid, kept when started: `jobs -p` leaves out one
    # that has already ended (a result line short, the others' shifted).
    local i
    for i in $(seq "$n"); do
        local rc=0
        wait "${pids[i - 1]}" || rc=$?
        echo "$rc $(cat "$out/$i.out")"
    done
    rm -rf "$out"
}

cmd_upload() {
    local mb=$1 name=$2 src="$DIR/upload-$2.bin" sum result
    head -c "$((mb << 20))" /dev/urandom > "$src"
    sum=$(sha256sum < "$src" | cut -d' ' -f1)
    result=$(in_ns client curl -s --max-time 60 -o /dev/null -T "$src" \
        -w '%{http_code} %{size_upload} %header{x-backend}' "http://$VIP/upload/$name" || true)
    rm -f "$src"
    echo "$result $sum"
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
        lbd-kill) cmd_lbd_kill ;;
        configure) cmd_configure "$@" ;;
        check-options) cmd_check_options ;;
        wait-healthy) cmd_wait_healthy "$1" ;;
        metrics) cmd_metrics ;;
        http) cmd_http "$1" ;;
        lbd-reload) cmd_lbd_reload ;;
        nginx-start) cmd_nginx_start "$1" ;;
        nginx-stop) cmd_nginx_stop "$1" ;;
        nginx-listen) cmd_nginx_listen "$1" "${2:-}" ;;
        udp-echo) cmd_udp_echo "$1" "$2" ;;
        udp-echo-stop) cmd_udp_echo_stop "$1" ;;
        agent) cmd_agent "$1" "$2" ;;
        quic-server) cmd_quic_server "$1" "$2" ;;
        quic-server-stop) cmd_quic_server_stop "$1" ;;
        quic-client)
            [ -x "$QUIC_PEER" ] || die "quic-client: $QUIC_PEER is missing (cargo build --workspace builds it)"
            exec ip netns exec "$(ns client)" "$QUIC_PEER" client --connect "$VIP:$QUIC_PORT" "$@" ;;
        agent-stop) cmd_agent_stop "$1" ;;
        # exec: a caller can signal lbctl itself (events).
        lbctl) exec "$LBCTL" --socket "$DIR/lbd$SFX.sock" "$@" ;;
        # exec: the caller's pid becomes the command's (to signal it).
        exec) local n=$1; shift; exec ip netns exec "$(ns "$n")" "$@" ;;
        requests) cmd_requests "$1" ;;
        port-requests) cmd_port_requests "$1" "$2" ;;
        nexthops) cmd_nexthops ;;
        nexthops-wait) cmd_nexthops_wait "$@" ;;
        bgp-sessions) cmd_bgp_sessions "${1:-}" ;;
        bfd-sessions) cmd_bfd_sessions "${1:-}" ;;
        connects) cmd_connects "$1" ;;
        downloads) cmd_downloads "$1" "$2" ;;
        hls) cmd_hls "$1" ;;
        upload) cmd_upload "$1" "$2" ;;
        tunnel-backends) cmd_tunnel_backends ;;
        tunnel-state) cmd_tunnel_state "$@" ;;
        decap) cmd_decap "$@" ;;
        decap-stop) cmd_decap_stop "$1" ;;
        decap-counts) cmd_decap_counts "$1" ;;
        decap-selftest) cmd_decap_selftest "$1" ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
