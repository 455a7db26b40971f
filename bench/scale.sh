#!/usr/bin/env bash
# The cost as the work grows: harness.sh once per step of three series
# (flows 10k / 1M / 10M at 100 backends and 1 VIP; backends 10 / 100 /
# 1000 at 1M flows; VIPs 1 / 4 / 64 at 1M flows, 100 backends each (60
# for 64 VIPs: lbd holds 4,096 backend slots in all); the
# point 1M flows, 100 backends, 1 VIP is shared), each run with its own
# baseline rounds, then one markdown table of the medians: lbfwd's and
# lbd's rate, their ratio, latency, lbd's flow table at the end, how long
# the table took to hold 99% of the flows from empty, lbd's RSS; and the
# memory per flow as ps sees it (the difference of lbd's RSS between 10M
# and 10k flows over the difference in flows).
#
#   bench/scale.sh [--rounds 3] [--seconds 5] [--json bench-scale.json] [HARNESS OPTION...]
#
# The warm-up of each run is 2 s plus 3 s per million flows, so the table
# is full before the measurement (the report says when it was not);
# further options (--proto, --size, --no-testpmd, ...) go to every run.
# Takes about 10 minutes with 3 rounds. Needs what harness.sh needs.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 SECONDS_=5 JSON=bench-scale.json EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECONDS_=$2; shift 2 ;;
        --json) JSON=$2; shift 2 ;;
        --flows | --backends | --vips | --warmup)
            echo "scale: $1 is what the series sets (see the header of $0)" >&2; exit 2 ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# name flows backends vips
STEPS=(
    "flows-10k 10000 100 1"
    "flows-1M 1000000 100 1"
    "flows-10M 10000000 100 1"
    "backends-10 1000000 10 1"
    "backends-1000 1000000 1000 1"
    "vips-4 1000000 100 4"
    "vips-64 1000000 60 64"
)
for step in "${STEPS[@]}"; do
    read -r name flows backends vips <<< "$step"
    warmup=$(( 2 + 3 * flows / 1000000 ))
    echo "scale: $name: $flows flows, $backends backends, $vips VIP(s), warm-up $warmup s" >&2
    bench/harness.sh --rounds "$ROUNDS" --seconds "$SECONDS_" --warmup "$warmup" --flows "$flows" \
        --backends "$backends" --vips "$vips" --json "$WORK/$name.json" "${EXTRA[@]}" > "$WORK/$name.md"
    cat "$WORK/$name.md" >&2
done

python3 - "$WORK" "$JSON" "${STEPS[@]}" <<'PY'
import json, sys
work, out, steps = sys.argv[1], sys.argv[2], [s.split() for s in sys.argv[3:]]
runs = {name: json.load(open(f"{work}/{name}.json")) for name, *_ in steps}
json.dump(runs, open(out, "w"), indent=1)
print("| series | flows | backends | VIPs | lbfwd Mpps | lbd Mpps | ratio (median) | ratio by round | lbd p50 / p99 µs "
      "| active flows at the end | table 99% full after | lbd RSS at the end |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, flows, backends, vips in steps:
    r = runs[name]
    m = r["median"]
    fill = m["fill"]["seconds"]
    fill = "not within the warm-up" if fill is None else ("< 0.1 s" if fill < 0.1 else f"{fill:.1f} s")
    by_round = " ".join(f"{x['ratio']:.2f}" for x in r["rounds"])
    print(f"| {name.split('-')[0]} | {int(flows):,} | {backends} | {vips} | {m['baseline']['returned_mpps']:.2f} | "
          f"{m['lbd']['returned_mpps']:.2f} | {m['ratio']:.2f} | {by_round} | "
          f"{m['lbd']['lat_p50_us']:.0f} / {m['lbd']['lat_p99_us']:.0f} | {m['lbd_flows']['active_flows']:,} | {fill} | "
          f"{m['lbd_memory']['rss_end_kb'] / 1024:.0f} MiB |")
small, big = runs["flows-10k"]["median"], runs["flows-10M"]["median"]
per_flow = (big["lbd_memory"]["rss_end_kb"] - small["lbd_memory"]["rss_end_kb"]) * 1024 / (10_000_000 - 10_000)
# The table: 2 entries per flow, a power of two of 4-way buckets, 64 bytes an entry.
def slots(flows):
    buckets = -(-max(flows * 2, 4096) // 4)
    return (1 << (buckets - 1).bit_length()) * 4
print(f"\nmemory per flow as ps sees it (lbd's VmRSS at 10M flows less at 10k, over the flows between): {per_flow:.0f} bytes; "
      f"the flow table alone: {slots(10_000_000) * 64 / 10_000_000:.0f} bytes per flow at 10M "
      f"({slots(10_000_000):,} entries of 64 bytes for 2 per flow, rounded up to a power of two of buckets)")
print(f"\nall runs in {out}")
PY
