#!/usr/bin/env bash
# The DR lab: real clients and real servers around lbd, in network namespaces
# this script creates and removes. One implementation, used by `make demo`
# (scripts/demo.sh) and by the end-to-end tests (control/tests/{dr_lab,
# ecmp_lab,netns_lab}.rs, through testkit/src/lab.rs).
#
#   client 192.0.2.100 ─┐
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
# spreads flows by L4 hash (fib_multipath_hash_policy=1):
#
#   client 203.0.113.100 ── router 203.0.113.1 | 192.0.2.254 ─┐ bridge
#   lbd #1 192.0.2.1, lbd #2 192.0.2.2 (namespaces lb, lb2)  ──┤
#   be1..4 192.0.2.11-14 (default route: the router)         ──┘
#
# Usage: scripts/lab.sh COMMAND [ARGS]     (LAB_ID names one lab; default "demo";
#                                           LB=2 picks the second lbd in ecmp)
#   up                  namespaces, bridge, addresses, nginx on be1..be4
#                       (in ecmp also the router and its BIRD)
#   down                stop everything and remove the namespaces (always safe)
#   lbd-start [ARGS]    start lbd (state file kept in the lab), wait for its API
#                       (in ecmp with --bgp-routes, and start its BIRD); ARGS go
#                       to lbd (e.g. --json); LAB_WORKERS=2: two workers on two
#                       queue pairs; LAB_PORT=af_xdp: the segment through
#                       net_af_xdp instead of net_af_packet; LAB_FLOWS=N: flows
#                       per worker (default 65536). Its stdout goes
#                       to lbd.out, stderr to lbd.log
#   lbd-stop            SIGTERM lbd, wait for it; fails unless it exited with 0
#   configure [W1 W2 W3] lbctl: the VIP and be1..be3 with HTTP checks (weights;
#                       LAB_ORDER="3 2 1" adds the backends in another order,
#                       LAB_ORDER=1 only be1)
#   check-options       the health-check timing configure gives (one line of
#                       lbctl options; the demo uses them too)
#   nexthops            (ecmp) the router's next hops for the VIP, one per line
#   wait-healthy N      until N backends pass their checks
#   wait-connections N  until the client has N established connections to the VIP
#   metrics             lbd's Prometheus metrics (scraped in its namespace)
#   http PATH           GET PATH on the metrics listener (/healthz, /readyz): body, then the status
#   lbd-reload          SIGHUP to lbd (reload its state file)
#   nginx-stop N | nginx-start N
#   nginx-listen N [ADDR] restart be N's nginx listening on ADDR:80 only (no ADDR:
#                       on every address, as at `up`)
#   udp-echo N PORT     a UDP echo server on be N bound to VIP:PORT (background);
#   udp-echo-stop N     and its end
#   agent N ANSWER      be N's load-feedback agent (lb-agent, port 10999) answers
#                       ANSWER ("50%", "drain", ...) from now on; started if
#                       not running (background)
#   agent-stop N        and its end
#   lbctl ARGS          lbctl against the lab's lbd
#   exec NS CMD...      run CMD in a namespace: client, lb, sw, be1..be4
#   requests N          N HTTP requests (each its own connection) from the client;
#                       prints one line per request: the serving backend or "FAILED"
#   port-requests P N   N requests from the client's source ports P..P+N-1 (in
#                       order, within 40000-44999, reserved for it); prints
#                       "port backend" (or "port FAILED:reason") each
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
LB_AGENT=${LB_AGENT:-$ROOT/target/debug/lb-agent}

VIP=198.51.100.10
VIP_PORT=80
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

ns() { echo "$NS_PREFIX-$1"; }
topo() { cat "$DIR/topo" 2>/dev/null || echo flat; }
client_ip() { if [ "$(topo)" = ecmp ]; then echo 203.0.113.100; else echo 192.0.2.100; fi; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }
backend_ip() { echo "192.0.2.$((10 + $1))"; }
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
    for i in 1 2 3 4; do
        [ -f "$DIR/be$i/nginx.pid" ] && kill -TERM "$(cat "$DIR/be$i/nginx.pid")" 2>/dev/null || true
    done
    for n in client router lb lb2 be1 be2 be3 be4 sw; do
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
    }
}
EOF
}

cmd_up() {
    need_root
    command -v nginx >/dev/null || die "nginx is missing: run scripts/setup.sh"
    local topo=${LAB_TOPO:-flat}
    case "$topo" in flat | ecmp) ;; *) die "LAB_TOPO=$topo: flat or ecmp" ;; esac
    [ "$topo" = flat ] || command -v bird >/dev/null || die "bird is missing: run scripts/setup.sh"
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
    [ "$topo" = flat ] || spaces+=(router lb2)
    for n in "${spaces[@]}"; do
        ip netns add "$(ns $n)"
        in_ns "$n" ip link set lo up
    done
    # port-requests binds these source ports itself: no connect() may take
    # one as its ephemeral port (CI once saw 12 of 50 downloads land there).
    in_ns client sysctl -qw net.ipv4.ip_local_reserved_ports="$FIXED_PORTS"
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
    attach lb data0
    if [ "$topo" = flat ]; then
        attach client eth0
        in_ns client ip addr add "$(client_ip)/24" dev eth0
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
        [ "$topo" = flat ] || in_ns "be$i" ip route add default via "$ROUTER"
        # Classic DR: the VIP on lo, never answered for on the segment.
        in_ns "be$i" ip addr add "$VIP/32" dev lo
        in_ns "be$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        mkdir -p "$DIR/be$i/tmp"
        nginx_conf "$i" > "$DIR/be$i/nginx.conf"
        cmd_nginx_start "$i"
    done
    echo "lab $ID up ($topo): client $(client_ip), backends 192.0.2.11-14, VIP $VIP:$VIP_PORT/tcp"
}

# BGP timers for a lab: a session is dead after 3 s and reconnects in 1 s.
BGP_TIMERS="hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 5;"

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
# Equal BGP paths from the balancers become one multipath kernel route.
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
template bgp balancer {
    local $ROUTER as 65000;
    $BGP_TIMERS
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
include "$d/vips.conf";
protocol bgp uplink {
    local $LOCAL as 65001;
    neighbor $ROUTER as 65000;
    $BGP_TIMERS
    ipv4 { import none; export where source = RTS_STATIC; };
}
CONF
    in_ns "lb$SFX" bird -c "$d/bird.conf" -s "$d/bird.ctl" -P "$d/bird.pid" \
        </dev/null >/dev/null 2>>"$d/bird.err" || die "bird in lb$SFX: $(cat "$d/bird.err")"
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
            iface=up
        fi
        if [ -n "$iface" ] && [ -S "$sock" ] && "$LBCTL" --socket "$sock" info >/dev/null 2>&1; then
            in_ns "lb$SFX" ip link set lbk0 up
            [ "$(topo)" = flat ] || lb_bird_start
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

cmd_lbctl() { "$LBCTL" --socket "$DIR/lbd$SFX.sock" "$@"; }

cmd_check_options() {
    if [ "$(topo)" = flat ]; then echo "${CHECK_OPTIONS[*]}"; else echo "${ECMP_CHECK_OPTIONS[*]}"; fi
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

cmd_wait_connections() {
    local n
    for _ in $(seq 200); do
        n=$(in_ns client ss -Htn state established dst "$VIP" dport = ":$VIP_PORT" | wc -l)
        [ "$n" -ge "$1" ] && return 0
        sleep 0.1
    done
    in_ns client ss -tn dst "$VIP" | awk '{print $1}' | sort | uniq -c >&2
    die "$n of $1 connections to the VIP established after 20 s"
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
        check-options) cmd_check_options ;;
        wait-healthy) cmd_wait_healthy "$1" ;;
        wait-connections) cmd_wait_connections "$1" ;;
        metrics) cmd_metrics ;;
        http) cmd_http "$1" ;;
        lbd-reload) cmd_lbd_reload ;;
        nginx-start) cmd_nginx_start "$1" ;;
        nginx-stop) cmd_nginx_stop "$1" ;;
        nginx-listen) cmd_nginx_listen "$1" "${2:-}" ;;
        udp-echo) cmd_udp_echo "$1" "$2" ;;
        udp-echo-stop) cmd_udp_echo_stop "$1" ;;
        agent) cmd_agent "$1" "$2" ;;
        agent-stop) cmd_agent_stop "$1" ;;
        # exec: a caller can signal lbctl itself (events).
        lbctl) exec "$LBCTL" --socket "$DIR/lbd$SFX.sock" "$@" ;;
        # exec: the caller's pid becomes the command's (to signal it).
        exec) local n=$1; shift; exec ip netns exec "$(ns "$n")" "$@" ;;
        requests) cmd_requests "$1" ;;
        port-requests) cmd_port_requests "$1" "$2" ;;
        nexthops) cmd_nexthops ;;
        downloads) cmd_downloads "$1" "$2" ;;
        hls) cmd_hls "$1" ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
