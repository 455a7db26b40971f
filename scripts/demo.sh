#!/usr/bin/env bash
# The demo, for now: lbd's poll-mode worker takes a capture of client SYNs
# for the VIP 198.51.100.10:443 through DPDK's net_pcap device, picks a real
# server for each flow with weighted Maglev, and hands it the untouched IP
# packet by rewriting only the Ethernet header (DR mode). Frames that are not
# for the load balancer are counted and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p control
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

LB_MAC=02:70:63:61:70:00        # net_pcap's port MAC
cat > "$work/lb.toml" <<'TOML'
[[vip]]
address = "198.51.100.10"
port = 443
protocol = "tcp"

[[vip.backend]]                 # the real servers own the VIP on their loopback
address = "192.0.2.11"
mac = "02:00:00:00:00:11"
weight = 1

[[vip.backend]]
address = "192.0.2.12"
mac = "02:00:00:00:00:12"
weight = 1

[[vip.backend]]
address = "192.0.2.13"
mac = "02:00:00:00:00:13"
weight = 2
TOML

echo "== configuration: VIP 198.51.100.10:443/tcp, backends .11 .12 (weight 1) and .13 (weight 2)"
echo "== crafting client traffic"
python3 scripts/demo-frames.py "$work/in.pcap" "$LB_MAC" 3000
echo
echo "== input (first 3 frames): clients -> VIP at the load balancer's MAC"
tcpdump -e -n -r "$work/in.pcap" -c 3 2>/dev/null
echo
echo "== lbd: 1 worker lcore, net_pcap port"
LBD_LOG=warn ./target/release/lbd -l 0,1 --no-pci --in-memory -m 256 --file-prefix "lbdemo$$" \
    --log-level lib.eal:warning \
    --vdev "net_pcap0,rx_pcap=$work/in.pcap,tx_pcap=$work/out.pcap" \
    -- --port net_pcap0 --state "$work/lb.toml" --flows 65536 --exit-idle-ms 500 --no-grpc
echo
echo "== output (first 3 frames): the same IP packets, Ethernet now load balancer -> real server"
tcpdump -e -n -r "$work/out.pcap" -c 3 2>/dev/null
echo
echo "== new flows per real server (weights 1:1:2)"
tcpdump -e -n -r "$work/out.pcap" 2>/dev/null | awk '{print $4}' | tr -d ',' | sort | uniq -c |
    sed -e 's/02:00:00:00:00:11/192.0.2.11/; s/02:00:00:00:00:12/192.0.2.12/; s/02:00:00:00:00:13/192.0.2.13/'
