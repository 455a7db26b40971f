#!/usr/bin/env python3
"""Write the demo's input pcap: TCP SYNs from clients to a VIP, addressed to
the load balancer's MAC, plus a few frames for another MAC (seen on a shared
segment) that the load balancer must drop. Standard library only."""
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac(s: str) -> bytes:
    return bytes(int(b, 16) for b in s.split(":"))


def syn(dst_mac, src_mac, src_ip, dst_ip, sport, dport):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000 + sport, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sport, 0x4000, 64, 6, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def main():
    out, lb_mac, n = sys.argv[1], mac(sys.argv[2]), int(sys.argv[3])
    client_mac = mac("02:00:00:00:00:c1")
    vip = bytes([198, 51, 100, 10])
    frames = []
    for i in range(n):
        client = bytes([203, 0, 113, 1 + i % 200])
        frames.append(syn(lb_mac, client_mac, client, vip, 10000 + i, 443))
    for i in range(n // 10):  # not for us: dropped as not_for_us
        frames.append(syn(mac("02:00:00:00:00:99"), client_mac, bytes([203, 0, 113, 250]), vip, 20000 + i, 443))
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(fr), len(fr)) + fr)
    print(f"wrote {len(frames)} frames to {out}")


if __name__ == "__main__":
    main()
