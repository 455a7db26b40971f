#!/usr/bin/env bash
# The demo, for now: lbd's poll-mode workers forward a capture of client SYNs
# for a VIP through DPDK's net_pcap device, rewriting only the Ethernet
# header towards the real server (DR mode), and drop what is not for them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p control
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

LB_MAC=02:70:63:61:70:00        # net_pcap's port MAC
BACKEND_MAC=02:00:00:00:00:b1   # the real server owning the VIP on its loopback

echo "== crafting client traffic"
python3 scripts/demo-frames.py "$work/in.pcap" "$LB_MAC" 1000
echo
echo "== input (first 3 frames): clients -> VIP 198.51.100.10:443 at the load balancer's MAC"
tcpdump -e -n -r "$work/in.pcap" -c 3 2>/dev/null
echo
echo "== lbd: 1 worker lcore, net_pcap port"
LBD_LOG=warn ./target/release/lbd -l 0,1 --no-pci --in-memory -m 256 --file-prefix "lbdemo$$" \
    --log-level lib.eal:warning \
    --vdev "net_pcap0,rx_pcap=$work/in.pcap,tx_pcap=$work/out.pcap" \
    -- --port net_pcap0 --route "$LB_MAC=$BACKEND_MAC" --exit-idle-ms 500
echo
echo "== output (first 3 frames): same IP packets, Ethernet now load balancer -> real server"
tcpdump -e -n -r "$work/out.pcap" -c 3 2>/dev/null
echo
echo "forwarded $(tcpdump -r "$work/out.pcap" 2>/dev/null | wc -l) of $(tcpdump -r "$work/in.pcap" 2>/dev/null | wc -l) frames"
