#!/usr/bin/env bash
# The harness: our rate as a ratio to a plain DPDK forwarder, measured in the
# same run, on the same virtual device and the same cores. Each round runs
# the generator (lbgen, memif client, cpu 0) against the baseline (lbfwd:
# receive, swap MACs, send back; cpu 1), against DPDK's own dpdk-testpmd in
# macswap mode (forwarding core on cpu 1; Debian's dpdk-dev package; left
# out when not installed, or with --no-testpmd), and then against lbd (one
# worker on cpu 1, one UDP VIP with N backends of static MACs), each over a
# fresh net_memif link; the median round is reported as a markdown table
# and JSON.
#
#   bench/harness.sh [--rounds 3] [--seconds 5] [--warmup 2] [--flows 1000000]
#                    [--backends 100] [--size 64] [--churn CHANGES_PER_S]
#                    [--churn-in-flight 8] [--abuse CLIENTS]
#                    [--proto udp|tcp] [--ipv6] [--vips 1] [--rate-mpps 0]
#                    [--new-flows-per-sec 0] [--json bench-result.json]
#                    [--no-testpmd] [--forward dr|ipip|gue|vxlan]
#                    [--flood] [--flood-seconds 10]
#
# --flood: lbd alone (no baselines), per round: lbgen establishes and
# confirms every flow (at least three passes at full rate, each flow's
# second packet confirming its entry: TCP ACKs, or UDP datagrams), sends
# them paced at --rate-mpps (1 if not given) for --seconds, then the same
# with a flood of never-repeating new 5-tuples filling every burst at the
# generator's full rate for --flood-seconds: TCP SYNs with --proto tcp,
# UDP datagrams with udp, to the same VIP. Before each of the two phases
# lbgen pauses while the harness reads lbd's counters (/metrics), so each
# phase's counts are exact. The report, per phase: established packets
# returned per second (and refused by the link, latency), the established
# packets that missed the flow table (lbd's new_flows less the flood
# frames sent), confirmed entries displaced (flow_evicted_confirmed), and
# what the flood's entries did (flow_inserted, flow_evicted_unconfirmed,
# flow_rejected, active_flows).
#
# --forward: the backends are reached through that tunnel (IPv4, behind a
# gateway of static MAC) instead of by DR; lbgen reads its stamps after the
# tunnel's headers in what comes back.
#
# The traffic: --flows flows of --proto (UDP, or TCP ACKs of established
# flows) over IPv4 or --ipv6, spread over --vips VIPs (198.51.100.10 + i or
# 2001:db8::10 + i, port 443, each with the --backends backends), as fast
# as the link takes it or at --rate-mpps, with --new-flows-per-sec of the
# flows replaced by new ones every second.
#
# --churn: during lbd's measurement, lbchurn changes a backend's weight
# through the gRPC API at that rate, open loop with up to --churn-in-flight
# requests in flight (default 8; the rate is at most that many per reply
# time, and a reply waits for its group's fsync) (each change a new Maglev table and snapshot, acknowledged once the
# state file holds it) and reports the changes/s acknowledged, the reply
# time, the time from a snapshot's publication until every worker forwards
# with it (p50/p99) and the packets the dataplane dropped meanwhile.
#
# --abuse: each round runs lbd a second time with lbabuse during the
# measurement: CLIENTS concurrent gRPC clients (one connection each) send
# valid and hostile requests (lb_testkit::probe) as fast as replies come,
# on VIPs of their own (the measured VIPs are left alone and checked
# unchanged). Reported: requests and statuses per method, failures
# (UNKNOWN, INTERNAL, UNAVAILABLE, transport errors: must be 0), lbd's RSS
# (VmRSS, and VmHWM after) before and after and every 5 s between (the
# growth in the run's first half against its second: does it level off?),
# and lbd's forwarded rate and
# drops beside the same round's lbd without abuse.
#
# Every lbd round also reports lbd's VmRSS before the first packet (its
# flow table allocated and zeroed) and at the end, and how long its flow
# table took from the first flow to hold 99% of --flows (/metrics read
# every 0.1 s during the warm-up): a round whose table was not full by
# then says that it measured insertion. bench/scale.sh runs the series of
# flows, backends and VIPs.
#
# Builds release binaries first. Needs root and 1 GiB of free hugepages
# (scripts/setup.sh reserves them). A loaded 2-core VM is noisy: read the
# ratio, not the absolute rates.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 SECONDS_=5 WARMUP=2 FLOWS=1000000 BACKENDS=100 SIZE=64 JSON=bench-result.json CHURN=0 CHURN_IN_FLIGHT=8 ABUSE=0
PROTO=udp IPV6=0 VIPS=1 RATE=0 NEW_FLOWS=0 FORWARD=dr FLOOD=0 FLOOD_SECONDS=10
TESTPMD=$(command -v dpdk-testpmd || true)
while [ $# -gt 0 ]; do
    case "$1" in
        --ipv6) IPV6=1; shift; continue ;;
        --no-testpmd) TESTPMD=""; shift; continue ;;
        --flood) FLOOD=1; shift; continue ;;
        --flood-seconds) FLOOD_SECONDS=$2 ;;
        --rounds) ROUNDS=$2 ;; --seconds) SECONDS_=$2 ;; --warmup) WARMUP=$2 ;;
        --flows) FLOWS=$2 ;; --backends) BACKENDS=$2 ;; --size) SIZE=$2 ;; --json) JSON=$2 ;; --churn) CHURN=$2 ;;
        --churn-in-flight) CHURN_IN_FLIGHT=$2 ;;
        --abuse) ABUSE=$2 ;;
        --forward) FORWARD=$2 ;;
        --proto) PROTO=$2 ;; --vips) VIPS=$2 ;; --rate-mpps) RATE=$2 ;; --new-flows-per-sec) NEW_FLOWS=$2 ;;
        *) echo "harness: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
    shift 2
done
case "$PROTO" in udp | tcp) ;; *) echo "harness: --proto $PROTO: udp or tcp" >&2; exit 2 ;; esac
# The flood paces the established flows (the flood fills the rest).
[ "$FLOOD" = 0 ] || [ "$RATE" != 0 ] || RATE=1
GEN_ARGS=(--proto "$PROTO" --vips "$VIPS" --rate-mpps "$RATE" --new-flows-per-sec "$NEW_FLOWS")
[ "$FLOOD" = 0 ] || GEN_ARGS+=(--flood --flood-seconds "$FLOOD_SECONDS")
[ "$IPV6" = 0 ] || GEN_ARGS+=(--ipv6)
# Tunnelled backends (IPv4 backends): what lbd sends back carries the
# tunnel's headers (the baselines' frames do not).
OVERHEAD=0
case "$FORWARD" in
    dr) ;;
    ipip) OVERHEAD=20 ;;
    gue) OVERHEAD=28 ;;
    vxlan) OVERHEAD=50 ;;
    *) echo "harness: --forward $FORWARD: dr, ipip, gue or vxlan" >&2; exit 2 ;;
esac
[ "$FORWARD" = dr ] || [ "$IPV6" = 0 ] || { echo "harness: --forward with --ipv6 is not set up (IPv4 backends only)" >&2; exit 2; }

cargo build --release --locked -q -p lb-bench -p control
# BENCH_BIN=DIR: another build's binaries (to compare two builds in turn).
BIN=${BENCH_BIN:-target/release}
WORK=$(mktemp -d)
SUT_PID=""
cleanup() { [ -z "$SUT_PID" ] || kill -KILL "$SUT_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

SUT_MAC=02:00:00:00:00:01
EAL=(--no-pci --in-memory -m 512 --log-level lib.eal:warning)
[ "${LB_EAL_NO_HUGE:-}" = 1 ] && EAL=(--no-pci --no-huge --no-shconf -m 1024 --log-level lib.eal:warning)

# The VIPs lbgen sends to (UDP: QUIC/SRT-style), each with the same N
# backends of static MACs: no resolution.
# Tunnelled ones (--forward) sit behind a gateway of static MAC.
python3 - "$VIPS" "$BACKENDS" "$PROTO" "$IPV6" "$FORWARD" > "$WORK/lb.toml" <<'PY'
import ipaddress, sys
vips, backends, proto, v6, forward = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5]
first = ipaddress.ip_address("2001:db8::10" if v6 else "198.51.100.10")
if forward != "dr":
    print('local_addresses = ["192.0.2.1"]\n[[route]]\nprefix = "10.0.0.0/8"\ngateway = "192.0.2.254"\nmac = "02:00:00:00:00:fe"\n')
for v in range(vips):
    print(f'[[vip]]\naddress = "{first + v}"\nport = 443\nprotocol = "{proto}"')
    if backends > 655:
        # Maglev needs 100 slots a backend; the default table has 65537.
        print("table_size = 655373")
    for i in range(1, backends + 1):
        addr = f"2001:db8:1::{i:x}" if v6 else f"10.1.{i // 250}.{i % 250 + 1}"
        mac = f'mac = "02:be:00:00:{i // 256:02x}:{i % 256:02x}"'
        if forward == "vxlan":
            mac += '\nforward = "vxlan"\nvni = 100'
        elif forward != "dr":
            mac = f'forward = "{forward}"'
        print(f'[[vip.backend]]\naddress = "{addr}"\n{mac}')
PY

# lbd's metrics listener, on loopback: /healthz says when its workers run.
METRICS_PORT=$(( 20000 + $$ % 10000 ))

# Flows per lbd worker: room for every generated flow.
TABLE=$(( FLOWS * 2 > 4096 ? FLOWS * 2 : 4096 ))

start_sut() { # kind, socket
    local vdev="net_memif0,role=server,socket=$2,mac=$SUT_MAC"
    case "$1" in
        baseline)
            "$BIN/lbfwd" -l 1 "${EAL[@]}" --file-prefix "bfwd$$" --vdev "$vdev" \
                -- --port net_memif0 > "$WORK/sut.out" 2> "$WORK/sut.err" & ;;
        testpmd)
            # Main lcore beside the generator (it only prints stats), the
            # forwarding core on cpu 1, as lbd's worker.
            "$TESTPMD" --lcores 0@0,1@1 "${EAL[@]}" --file-prefix "btpmd$$" --vdev "$vdev" \
                -- --forward-mode=macswap --auto-start --stats-period 1 --nb-cores 1 \
                > "$WORK/sut.out" 2> "$WORK/sut.err" & ;;
        lbd)
            LBD_LOG=warn "$BIN/lbd" --lcores 0@0,1@1 "${EAL[@]}" --file-prefix "blbd$$" --vdev "$vdev" \
                -- --port net_memif0 --state "$WORK/lb.toml" --grpc-socket "$WORK/lbd.sock" --flows "$TABLE" \
                --metrics-listen "127.0.0.1:$METRICS_PORT" \
                --mbufs 16383 --json > "$WORK/sut.out" 2> "$WORK/sut.err" & ;;
    esac
    SUT_PID=$!
    if [ "$1" = lbd ]; then
        # The memif socket exists from EAL's start, long before lbd's
        # workers poll: their flow tables are allocated and zeroed first
        # (2 GiB each for 10M flows, seconds). /healthz answers only once
        # the workers run: a generator started before would fill the ring
        # and measure nothing.
        for _ in $(seq 1200); do
            kill -0 "$SUT_PID" 2>/dev/null || { cat "$WORK/sut.err" >&2; echo "harness: lbd exited" >&2; exit 1; }
            curl -sf --max-time 1 "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null && break
            sleep 0.1
        done
        curl -sf --max-time 1 "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null ||
            { cat "$WORK/sut.err" >&2; echo "harness: lbd's workers did not start within 2 minutes" >&2; exit 1; }
    fi
    # memif listens on an abstract socket by default ("@PATH" for ss).
    for _ in $(seq 200); do
        ss -xl 2>/dev/null | grep -qF "@$2" && return 0
        [ -S "$2" ] && return 0
        sleep 0.1
    done
    cat "$WORK/sut.err" >&2; echo "harness: $1 did not open its memif socket" >&2; exit 1
}

stop_sut() { # kind
    kill -TERM "$SUT_PID" 2>/dev/null || true
    local rc=0
    wait "$SUT_PID" 2>/dev/null || rc=$?
    SUT_PID=""
    # Its report (lbd's counters) is only whole if it stopped cleanly.
    [ "$rc" = 0 ] || { tail -20 "$WORK/sut.err" >&2; echo "harness: $1 exited with status $rc" >&2; exit 1; }
}

# VmRSS or VmHWM of lbd, in kB.
rss_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SUT_PID/status"; }

run_one() { # kind (baseline, testpmd, lbd, lbd-abuse) round
    local sock="$WORK/memif-$1-$2.sock"
    start_sut "${1%-abuse}" "$sock"
    local churn="" abuse=""
    if [ "$1" = lbd-abuse ]; then
        local protect=() i
        for i in $(seq 0 $(( VIPS - 1 ))); do
            if [ "$IPV6" = 0 ]; then protect+=(--protect "198.51.100.$(( 10 + i )):443/$PROTO")
            else protect+=(--protect "[2001:db8::$(printf %x $(( 16 + i )))]:443/$PROTO"); fi
        done
        # On cpu 0, as lbchurn. RSS read just before and just after it,
        # and every 5 s while it runs (whether it levels off).
        (sleep "$WARMUP"; before=$(rss_kb VmRSS)
         (while :; do sleep 5; rss_kb VmRSS; done) > "$WORK/abuse-rss-samples-$2.txt" &
         sampler=$!
         rc=0; taskset -c 0 "$BIN/lbabuse" --socket "$WORK/lbd.sock" --clients "$ABUSE" \
            --seconds "$SECONDS_" "${protect[@]}" > "$WORK/abuse-$2.json" || rc=$?
         kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
         samples=$(paste -sd, "$WORK/abuse-rss-samples-$2.txt")
         echo "{\"rss_before_kb\":$before,\"rss_after_kb\":$(rss_kb VmRSS),\"hwm_after_kb\":$(rss_kb VmHWM),\"rss_every_5s_kb\":[$samples],\"rc\":$rc}" \
            > "$WORK/abuse-rss-$2.json"; exit "$rc") &
        abuse=$!
    fi
    if [ "$1" = lbd ] && [ "$CHURN" != 0 ]; then
        local vip=198.51.100.10:443/$PROTO backend=10.1.0.2
        [ "$IPV6" = 0 ] || { vip="[2001:db8::10]:443/$PROTO"; backend=2001:db8:1::1; }
        # On cpu 0 with the generator and lbd's control side: off the worker's core.
        (sleep "$WARMUP"; taskset -c 0 "$BIN/lbchurn" --socket "$WORK/lbd.sock" --vip "$vip" \
            --backend "$backend" --rate "$CHURN" --in-flight "$CHURN_IN_FLIGHT" --seconds "$SECONDS_" > "$WORK/churn-$2.json") &
        churn=$!
    fi
    # lbgen reports, then lingers without polling; the system under test
    # stops first, and lbgen closes its end after (see lbgen's --linger:
    # memif can free the rings under a peer that is still polling).
    local out="$WORK/$1-$2.json" overhead=0 sync=()
    [ "${1%-abuse}" != lbd ] || overhead=$OVERHEAD
    [ "$FLOOD" = 0 ] || { mkdir -p "$WORK/sync-$2"; sync=(--sync "$WORK/sync-$2"); }
    : > "$out"
    "$BIN/lbgen" -l 0 "${EAL[@]}" --file-prefix "bgen$$" --vdev "net_memif0,role=client,socket=$sock" \
        -- --port net_memif0 --dst-mac "$SUT_MAC" --flows "$FLOWS" --size "$SIZE" "${GEN_ARGS[@]}" "${sync[@]}" \
        --tunnel-overhead "$overhead" --seconds "$SECONDS_" --warmup "$WARMUP" --linger 30 > "$out" 2> "$WORK/gen.err" &
    local gen=$!
    # lbd's memory with its table allocated and zeroed, before any flow;
    # then, during the warm-up, how long its flow table takes to hold the
    # flows (lbd's /metrics every 0.1 s, from the first flow seen until
    # 99% of --flows hold an entry; polled on cpu 0 with the generator,
    # so only while it fills, and at most until the warm-up's end plus
    # lbgen's start). Not in flood mode (its own phases).
    local fill=""
    if [ "$1" = lbd ] && [ "$FLOOD" = 0 ]; then
        echo "{\"rss_idle_kb\":$(rss_kb VmRSS)}" > "$WORK/mem-idle-$2.json"
        (end=$(( $(date +%s%N) + (WARMUP + 2) * 1000000000 ))
         while [ "$(date +%s%N)" -lt "$end" ]; do
             n=$(curl -sf --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics" |
                 awk '/^lb_worker_active_flows\{/ { s += $2 } END { printf "%d", s }') || n=""
             [ -z "$n" ] || echo "$(date +%s%N) $n"
             [ -z "$n" ] || [ "$n" -lt $(( FLOWS * 99 / 100 )) ] || break
             sleep 0.1
         done > "$WORK/fill-$2.txt") &
        fill=$!
    fi
    # Flood mode: lbgen pauses before each phase; lbd's counters then.
    local phase phases=()
    [ "$FLOOD" = 0 ] || phases=(base flood)
    for phase in "${phases[@]}"; do
        while kill -0 "$gen" 2>/dev/null && [ ! -e "$WORK/sync-$2/$phase.ready" ]; do sleep 0.05; done
        [ -e "$WORK/sync-$2/$phase.ready" ] || break
        curl -sf --max-time 10 "http://127.0.0.1:$METRICS_PORT/metrics" > "$WORK/metrics-$phase-$2.txt" ||
            { echo "harness: lbd's /metrics did not answer" >&2; exit 1; }
        : > "$WORK/sync-$2/$phase.go"
    done
    while kill -0 "$gen" 2>/dev/null && ! grep -q '^{' "$out"; do sleep 0.1; done
    if [ -n "$fill" ]; then
        kill "$fill" 2>/dev/null || true
        wait "$fill" 2>/dev/null || true
        echo "{\"rss_end_kb\":$(rss_kb VmRSS),\"hwm_end_kb\":$(rss_kb VmHWM)}" > "$WORK/mem-end-$2.json"
    fi
    [ -z "$churn" ] || wait "$churn" || { echo "harness: lbchurn failed" >&2; exit 1; }
    local abuse_rc=0
    [ -z "$abuse" ] || wait "$abuse" || abuse_rc=$?
    stop_sut "${1%-abuse}"
    wait "$gen" || { cat "$WORK/gen.err" >&2; echo "harness: lbgen failed" >&2; exit 1; }
    [ "${1%-abuse}" != lbd ] || cp "$WORK/sut.out" "$WORK/$1-counters-$2.json"
    [ -z "$abuse" ] || echo "harness: round $2 abuse: $(cat "$WORK/abuse-$2.json") $(cat "$WORK/abuse-rss-$2.json")" >&2
    [ "$abuse_rc" = 0 ] || { echo "harness: lbabuse failed (status $abuse_rc)" >&2; exit 1; }
    echo "harness: round $2 $1: $(cat "$WORK/$1-$2.json")" >&2
    [ -z "$churn" ] || echo "harness: round $2 churn: $(cat "$WORK/churn-$2.json")" >&2
}

for r in $(seq "$ROUNDS"); do
    if [ "$FLOOD" = 0 ]; then
        run_one baseline "$r"
        [ -z "$TESTPMD" ] || run_one testpmd "$r"
    fi
    run_one lbd "$r"
    [ "$ABUSE" = 0 ] || run_one lbd-abuse "$r"
done

if [ "$FLOOD" = 1 ]; then
    python3 - "$WORK" "$ROUNDS" "$JSON" <<'PY'
import json, re, sys
work, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NAMES = ("new_flows", "flow_rejected", "flow_inserted", "flow_evicted_unconfirmed", "flow_evicted_confirmed",
         "flow_expired", "active_flows", "forwarded", "tx_failed")
def metrics(path):
    # lb_worker_NAME_total{worker="1"} V (a gauge has no _total), summed over workers.
    got = dict.fromkeys(NAMES, 0)
    got["drops"] = 0
    for line in open(path):
        if line.startswith("lb_worker_drops_total{"):
            got["drops"] += int(float(line.split()[-1]))
        m = re.match(r"lb_worker_(\w+?)(?:_total)?\{worker=\"[^\"]*\"\} (\S+)$", line)
        if m and m.group(1) in got:
            got[m.group(1)] += int(float(m.group(2)))
    return got
rows = []
for r in range(1, rounds + 1):
    g = json.load(open(f"{work}/lbd-{r}.json"))
    at = {p: metrics(f"{work}/metrics-{p}-{r}.txt") for p in ("base", "flood")}
    t = json.load(open(f"{work}/lbd-counters-{r}.json"))["total"]
    at["end"] = {k: t[k] for k in NAMES}
    at["end"]["drops"] = sum(t["drops"].values())
    row = {"round": r, "lbgen": g, "lbd_at": at}
    for phase, (a, b) in {"base": ("base", "flood"), "flood": ("flood", "end")}.items():
        d = {k: at[b][k] - at[a][k] for k in NAMES + ("drops",) if k != "active_flows"}
        d["active_flows_before"], d["active_flows_after"] = at[a]["active_flows"], at[b]["active_flows"]
        # Every flood frame is a new 5-tuple: one new flow each; the rest
        # are established packets that found no entry.
        d["established_misses"] = d["new_flows"] - g[phase]["flood_tx"]
        row[phase] = d
    rows.append(row)
json.dump({"mode": "flood", "rounds": rows}, open(out, "w"), indent=1)
for x in rows:
    g, b, f = x["lbgen"], x["base"], x["flood"]
    gb, gf = g["base"], g["flood"]
    kind = "TCP SYN" if g["flood_kind"] == "syn" else "UDP"
    print(f"round {x['round']}: {g['flows']} established {g['proto'].upper()}/IPv{g['ip']} flows paced at {g['rate_mpps']} Mpps "
          f"(warm-up {g['warmup_s']:.1f} s, {g['warmup_tx']} frames), then a {kind} flood for {gf['seconds']:.1f} s\n")
    print("| phase | established sent / returned Mpps | refused by the link | p50 / p99 µs | flood sent Mpps (tried) "
          "| established packets that missed the table | confirmed entries displaced | flood: inserted / displaced unconfirmed / rejected | active flows at the end |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, p, d in (("without flood", gb, b), ("flood", gf, f)):
        print(f"| {name} ({p['seconds']:.1f} s) | {p['est_tx_mpps']:.3f} / {p['est_rx_mpps']:.3f} | {p['est_refused']} | "
              f"{p['lat_p50_us']:.0f} / {p['lat_p99_us']:.0f} | {p['flood_tx_mpps']:.2f} ({p['flood_offered_mpps']:.2f}) | "
              f"{d['established_misses']} | {d['flow_evicted_confirmed']} | "
              f"{d['flow_inserted']} / {d['flow_evicted_unconfirmed']} / {d['flow_rejected']} | {d['active_flows_after']} |")
    ratio = gf["est_rx_mpps"] / gb["est_rx_mpps"] if gb["est_rx_mpps"] else 0.0
    print(f"\nestablished packets returned during the flood / without it: {ratio:.2f}; the flood's {gf['flood_tx']} frames "
          f"({g['flood_tuples']} tuples built) made {f['new_flows']} new flows in lbd; lbd's transmits refused "
          f"(generator's ring full) {b['tx_failed']} / {f['tx_failed']}; lbd's drops {b['drops']} / {f['drops']}; "
          f"entries expired {b['flow_expired']} / {f['flow_expired']} (without the flood / during it)\n")
print(f"all rounds in {out}")
PY
    exit 0
fi

python3 - "$WORK" "$ROUNDS" "$JSON" "$FLOWS" "$BACKENDS" "$SIZE" "${TESTPMD:+1}" "$WARMUP" <<'PY'
import json, statistics, sys
work, rounds, out, flows, backends, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:7])
testpmd, warmup = sys.argv[7] == "1", float(sys.argv[8])
rows = []
ratio = lambda x, b: x["returned_mpps"] / b["returned_mpps"] if b["returned_mpps"] else 0.0
for r in range(1, rounds + 1):
    b = json.load(open(f"{work}/baseline-{r}.json"))
    l = json.load(open(f"{work}/lbd-{r}.json"))
    row = {"round": r, "baseline": b, "lbd": l, "ratio": ratio(l, b)}
    if testpmd:
        row["testpmd"] = json.load(open(f"{work}/testpmd-{r}.json"))
        row["testpmd_ratio"] = ratio(row["testpmd"], b)
        row["lbd_to_testpmd"] = ratio(l, row["testpmd"])
    # lbd's own flow-table counters at the end of the round.
    t = json.load(open(f"{work}/lbd-counters-{r}.json"))["total"]
    row["lbd_flows"] = {k: t[k] for k in ("active_flows", "new_flows", "flow_rejected", "tx_failed")}
    row["lbd_memory"] = {**json.load(open(f"{work}/mem-idle-{r}.json")), **json.load(open(f"{work}/mem-end-{r}.json"))}
    # (ns, active flows) samples from the first with a flow on.
    samples = [tuple(map(int, l.split())) for l in open(f"{work}/fill-{r}.txt") if l.strip()]
    samples = [x for x in samples if x[1] > 0]
    full = [t for t, n in samples if n >= flows * 99 // 100]
    row["fill"] = {"samples": len(samples), "target": flows * 99 // 100,
                   "last_seen": samples[-1][1] if samples else 0,
                   "seconds": (full[0] - samples[0][0]) / 1e9 if samples and full else None}
    try:
        row["churn"] = json.load(open(f"{work}/churn-{r}.json"))
    except FileNotFoundError:
        pass
    try:
        row["abuse"] = json.load(open(f"{work}/abuse-{r}.json"))
        row["abuse"]["rss"] = json.load(open(f"{work}/abuse-rss-{r}.json"))
        row["lbd_abuse"] = json.load(open(f"{work}/lbd-abuse-{r}.json"))
        drops = lambda f: sum(json.load(open(f))["total"]["drops"].values())
        row["lbd_drops"] = drops(f"{work}/lbd-counters-{r}.json")
        row["lbd_abuse_drops"] = drops(f"{work}/lbd-abuse-counters-{r}.json")
        row["lbd_abuse_tx_failed"] = json.load(open(f"{work}/lbd-abuse-counters-{r}.json"))["total"]["tx_failed"]
    except FileNotFoundError:
        pass
    rows.append(row)
med = sorted(rows, key=lambda x: x["ratio"])[len(rows) // 2]
result = {"flows": flows, "backends": backends, "size": size, "cores": "generator cpu 0, forwarder cpu 1",
          "rounds": rows, "median": med}
json.dump(result, open(out, "w"), indent=1)
print(f"| system | offered Mpps | forwarded Mpps | in flight at stop | ratio to baseline | p50 µs | p99 µs | p99.9 µs |")
print(f"|---|---|---|---|---|---|---|---|")
names = {"baseline": ("lbfwd (baseline)", 1.0), "lbd": ("lbd", med["ratio"])}
if testpmd:
    names["testpmd"] = ("dpdk-testpmd macswap", med["testpmd_ratio"])
for name in ("baseline", "testpmd", "lbd"):
    if name not in names:
        continue
    x, (label, rx) = med[name], names[name]
    print(f"| {label} | {x['offered_mpps']:.2f} | {x['returned_mpps']:.2f} | {x['tx'] - x['rx']} | {rx:.2f} | "
          f"{x['lat_p50_us']:.1f} | {x['lat_p99_us']:.1f} | {x['lat_p999_us']:.1f} |")
if testpmd:
    by_round = " ".join("%.2f" % x["testpmd_ratio"] for x in rows)
    print(f"\nlbd / dpdk-testpmd in the median round: {med['lbd_to_testpmd']:.2f}; testpmd / lbfwd by round: {by_round}")
else:
    print("\ndpdk-testpmd: not installed (Debian: dpdk-dev) or --no-testpmd; lbfwd is the only baseline")
if "churn" in med:
    c = med["churn"]
    print(f"\nconfig churn during lbd's run: {c['changes_per_s']:.0f} changes/s acknowledged of {c['target_per_s']:.0f} asked "
          f"({c['in_flight']} requests in flight at most; reply p50 {c['ack_p50_us']:.0f} µs, p99 {c['ack_p99_us']:.0f} µs); "
          f"{c['snapshots']} snapshots published, {c['adopted']} first bursts on a new one over all workers, "
          f"p50 <= {c['adoption_p50_us']} µs, p99 <= {c['adoption_p99_us']} µs, max <= {c['adoption_max_us']} µs after its publication; "
          f"every worker on it: {c['all_workers_snapshots']} snapshots, p50 <= {c['all_workers_p50_us']} µs, "
          f"p99 <= {c['all_workers_p99_us']} µs, max <= {c['all_workers_max_us']} µs "
          f"(measured by the workers; workers still behind 1 s after the last change: {c['workers_behind_after_1s']}); "
          f"meanwhile lbd dropped {c['dataplane_drops']} packets and the link refused {c['tx_failed']} of its transmits")
for x in rows:
    if "abuse" not in x:
        continue
    a, m = x["abuse"], x["abuse"]["rss"]
    tally = "; ".join(f"{k} " + ", ".join(f"{c} {n}" for c, n in v.items()) for k, v in a["by_method"].items())
    print(f"\nround {x['round']}, API abuse ({a['clients']} clients, {a['seconds']:.0f} s): lbd forwarded "
          f"{x['lbd_abuse']['returned_mpps']:.2f} Mpps of {x['lbd_abuse']['offered_mpps']:.2f} offered "
          f"(without abuse, same round: {x['lbd']['returned_mpps']:.2f} of {x['lbd']['offered_mpps']:.2f}); "
          f"lbd's drops over the round {x['lbd_abuse_drops']} (without: {x['lbd_drops']}), during the abuse "
          f"{a['dataplane_drops']} dropped and {a['tx_failed']} transmits refused; {a['requests']} requests "
          f"({a['requests_per_s']:.0f}/s, reply p50 {a['reply_p50_us']:.0f} µs, p99 {a['reply_p99_us']:.0f} µs), "
          f"failures {a['failures']}, unexpected statuses {a['unexpected']}, measured VIPs unchanged: "
          f"{a['protected_unchanged']}; RSS {m['rss_before_kb']} kB before, {m['rss_after_kb']} kB after "
          f"(peak {m['hwm_after_kb']} kB)\nstatuses: {tally}")
    w = m.get("rss_every_5s_kb", [])
    if len(w) >= 4:
        h = len(w) // 2
        print(f"RSS every 5 s during the abuse ({len(w)} samples): {w[0]} to {w[h - 1]} kB in the first half "
              f"({w[h - 1] - w[0]:+d} kB), {w[h]} to {w[-1]} kB in the second ({w[-1] - w[h]:+d} kB)")
f = med["lbd_flows"]
print(f"\nlbd's flow table at the end: {f['active_flows']} active flows; {f['new_flows']} packets missed the table and were "
      f"placed by Maglev, {f['flow_rejected']} of them found no slot (forwarded without an entry, placed again next time); "
      f"over the whole round (warm-up included) the link refused {f['tx_failed']} of lbd's transmits (the generator's "
      f"receive ring full)")
m, fl, g = med["lbd_memory"], med["fill"], med["lbd"]
mb = lambda kb: f"{kb / 1024:.1f} MiB"
print(f"\nlbd's memory (VmRSS): {mb(m['rss_idle_kb'])} before the first packet (the flow table allocated and zeroed), "
      f"{mb(m['rss_end_kb'])} at the end of the round (peak {mb(m['hwm_end_kb'])}): "
      f"{m['rss_end_kb'] * 1024 / flows:.0f} bytes per flow of the whole process")
if fl["seconds"] is None:
    print(f"lbd's flow table did not hold 99% of the flows by the end of the warm-up ({warmup:.1f} s; "
          f"{fl['last_seen']} active flows at the last look): the measurement includes the flows' insertion, "
          f"not only established flows")
else:
    when = f"{fl['seconds']:.1f} s" if fl["seconds"] >= 0.1 else "under 0.1 s (one look)"
    print(f"lbd's flow table held 99% of the flows {when} after the first flow showed (looks every 0.1 s; "
          f"warm-up {warmup:.1f} s): the measurement is of established flows")
rate = f"at {g['rate_mpps']} Mpps" if g["rate_mpps"] else "as fast as the link takes"
print(f"\nmedian of {rounds} rounds by ratio; {flows} flows ({g['new_flows_per_s']:.0f} new per second) to {g['vips']} VIP(s), "
      f"{backends} backends each, {size}-byte {g['proto'].upper()}/IPv{g['ip']} frames {rate}, over net_memif; all rounds in {out}")
PY
