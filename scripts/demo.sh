#!/usr/bin/env bash
# The demo: lbd in DR mode between a real client and three real nginx
# servers, in network namespaces built by scripts/lab.sh (the lab the
# end-to-end tests use). Configured with lbctl only; traffic through the
# VIP; one server dies and its traffic moves with no failed request; the
# lab is removed at the end, also after a failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --locked -q
export LAB_ID=demo
lab() { scripts/lab.sh "$@"; }
trap 'lab down' EXIT
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }
per_backend() {
    sort | uniq -c | awk '{printf "   %-7s %5d requests\n", $2, $1; if ($2 == "FAILED") failed = 1}
        END {if (!failed) print "   failed      0 requests"}'
}
VIP=198.51.100.10:80/tcp

say "lab: client 192.0.2.100, servers be1..be3 (192.0.2.11-13, VIP on lo, nginx), lbd on net_af_packet"
lab up
lab lbd-start
lbctl() { scripts/lab.sh lbctl "$@"; }

say "configuration, through the API"
# The lab's health checks (scripts/lab.sh check-options), as the tests run them.
read -ra CHECK <<< "$(lab check-options)"
run lbctl vip add "$VIP"
for b in 1 2 3; do
    w=1; [ "$b" = 3 ] && w=2
    run lbctl backend add "$VIP" "192.0.2.1$b" --weight "$w" --check http:/name "${CHECK[@]}" >/dev/null
done
lab wait-healthy 3
run lbctl backend list "$VIP"

say "1000 HTTP requests from the client, each on its own connection (weights 1:1:2)"
lab requests 1000 | per_backend

say "direct return: 5 downloads of 8 MiB; the replies go from the servers straight to the client"
lab downloads 5 8M | awk '/^connected/ {next} {n++; b+=$3} END {printf "   client received %d MiB in %d downloads\n", b/1048576, n}'
lbctl --output json stats | python3 -c '
import json, sys
v = json.load(sys.stdin)["vips"][0]
print("   lbd forwarded %d packets, %d KiB in all, for the VIP (client to server only)" % (v["packets"], v["bytes"] // 1024))'

say "a viewer plays an HLS stream through the VIP (playlist + segments in a loop, one retry per fetch)"
lab hls 8 > "/tmp/lblab-demo-player" &
player=$!
sleep 2
say "be2's nginx stops"
lab nginx-stop 2
start=$(date +%s%N)
until lbctl health | grep 192.0.2.12 | grep -qw unhealthy; do sleep 0.05; done
echo "   lbd marked be2 down after $(( ($(date +%s%N) - start) / 1000000 )) ms (check: ${CHECK[*]})"
run lbctl health
say "1000 more requests: they all land on be1 and be3"
lab requests 1000 | per_backend
wait "$player"
echo "   player: $(cat /tmp/lblab-demo-player)"
rm -f /tmp/lblab-demo-player

say "be2 comes back"
lab nginx-start 2
lab wait-healthy 3
echo "   1000 requests:"
lab requests 1000 | per_backend

say "counters"
run lbctl stats
