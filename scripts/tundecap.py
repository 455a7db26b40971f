#!/usr/bin/env python3
"""A userspace tunnel decapsulator for a lab backend (scripts/lab.sh, LAB_TOPO=tunnel).

The lab's kernel has no ipip, gre or fou module, so a backend that lbd
reaches by IPIP or GUE takes its tunnel in userspace: this program opens a
TUN device (IFF_TUN | IFF_NO_PI, "decap0" by default), brings it up with
rp_filter off, and writes every inner packet it takes off a tunnel into it.
The kernel then receives the inner packet as if it had arrived on decap0:
the VIP on lo takes it, and the real TCP stack answers the client directly
through the default route (direct server return; nothing goes back through
the tunnel).

  --ipip        raw sockets for IP protocol 4 (IPv4 in IP) and 41 (IPv6 in
                IP), over IPv4 and IPv6. An AF_INET raw socket's buffer holds
                the outer IPv4 header (stripped by its IHL); an AF_INET6 one
                holds the payload only. While a raw socket for protocol 4
                is open the kernel does not answer an IPIP packet with ICMP
                protocol unreachable (raw delivery counts as delivered).
  --gue PORT    UDP sockets on PORT (IPv4 and IPv6): GUE variant 1, the
                payload is the inner IP packet (first nibble 4 or 6);
                variant 0 data messages (a 4-byte header and its options)
                are taken too.

Standard library only. It prints one line when it is ready, its counts on
SIGUSR1, and its counts again when SIGTERM (or SIGINT) ends it.

Also, for testing the lab without lbd: `tundecap.py send-syn ...` sends one
hand-crafted encapsulated TCP SYN (IPIP, GUE or VXLAN) from wherever it
runs, e.g. the router namespace (see `lab.sh decap-selftest`).
"""

import argparse
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    # The inner packets' sources (the clients) are routed out of another
    # interface: strict reverse-path filtering would drop them.
    for conf in ("all", "default", name):
        path = f"/proc/sys/net/ipv4/conf/{conf}/rp_filter"
        with open(path, "w") as f:
            f.write("0\n")
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return fd


def big_buffer(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


def ipv6_available():
    return os.path.exists("/proc/net/if_inet6") or socket.has_ipv6


def open_sockets(args):
    """(socket, kind) pairs; kind names the counter and how to strip."""
    socks = []
    if args.ipip:
        for proto, kind in ((IPPROTO_IPIP, "ipip4"), (IPPROTO_IPV6, "ip6in4")):
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
            big_buffer(s)
            socks.append((s, kind))
        if ipv6_available():
            for proto, kind in ((IPPROTO_IPIP, "ip4in6"), (IPPROTO_IPV6, "ip6in6")):
                try:
                    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
                except OSError as e:
                    print(f"tundecap: no IPv6 raw socket for protocol {proto}: {e}", flush=True)
                    continue
                big_buffer(s)
                socks.append((s, kind))
    if args.gue:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_buffer(s)
        s.bind(("0.0.0.0", args.gue))
        socks.append((s, "gue4"))
        if ipv6_available():
            try:
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                big_buffer(s)
                s.bind(("::", args.gue))
                socks.append((s, "gue6"))
            except OSError as e:
                print(f"tundecap: no IPv6 GUE socket: {e}", flush=True)
    return socks


def inner_packet(kind, data):
    """The inner IP packet of what a socket of `kind` received, or None."""
    if kind in ("ipip4", "ip6in4"):
        # AF_INET raw: the outer IPv4 header is in the buffer.
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    elif kind.startswith("gue"):
        if not data:
            return None
        variant = data[0] >> 6
        if variant == 0:
            # Variant 0: C bit clear (data), hlen 32-bit words of options.
            if len(data) < 4 or data[0] & 0x20:
                return None
            data = data[4 + (data[0] & 0x1F) * 4:]
        elif variant != 1:
            return None
    want = {"ipip4": 4, "ip4in6": 4, "ip6in4": 6, "ip6in6": 6}.get(kind)
    if not data or data[0] >> 4 not in (4, 6):
        return None
    if want is not None and data[0] >> 4 != want:
        return None
    return data


def serve(args):
    tun = open_tun(args.dev)
    socks = open_sockets(args)
    counts = {kind: 0 for _, kind in socks}
    counts.update(written=0, bad=0, write_errors=0, from_tun=0)
    stop = []

    def line(what):
        body = " ".join(f"{k} {v}" for k, v in counts.items())
        print(f"tundecap: {what}: {body}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGUSR1, lambda *_: line("counts"))
    kinds = ",".join(kind for _, kind in socks)
    print(f"tundecap: ready on {args.dev} (pid {os.getpid()}): {kinds}", flush=True)
    by_fd = {s.fileno(): (s, kind) for s, kind in socks}
    poll = select.poll()
    for fd in by_fd:
        poll.register(fd, select.POLLIN)
    poll.register(tun, select.POLLIN)
    while not stop:
        try:
            ready = poll.poll(500)
        except InterruptedError:
            continue
        for fd, _ in ready:
            if fd == tun:
                # What the kernel routes into decap0 (nothing should): drained.
                try:
                    os.read(tun, 65535)
                    counts["from_tun"] += 1
                except BlockingIOError:
                    pass
                continue
            s, kind = by_fd[fd]
            while True:
                try:
                    data = s.recv(65535, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                counts[kind] += 1
                inner = inner_packet(kind, data)
                if inner is None:
                    counts["bad"] += 1
                    continue
                try:
                    os.write(tun, inner)
                    counts["written"] += 1
                except OSError as e:
                    counts["write_errors"] += 1
                    if e.errno not in (errno.EINVAL, errno.EIO, errno.ENOBUFS):
                        raise
    line("exiting")


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0x4242):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def tcp_syn(src, dst, sport, dport):
    # A SYN with an MSS option, checksum over the pseudo header.
    opts = struct.pack("!BBH", 2, 4, 1460)
    seg = struct.pack("!HHIIBBHHH", sport, dport, 0x1234567, 0, (5 + 1) << 4, 0x02, 64240, 0, 0) + opts
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = checksum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def send_syn(args):
    inner = ipv4(args.client, args.vip, 6, tcp_syn(args.client, args.vip, args.sport, args.dport))
    if args.method == "ipip":
        # IP_HDRINCL (IPPROTO_RAW): the kernel fills a zero source in.
        outer_src = args.source or "0.0.0.0"
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.sendto(ipv4(outer_src, args.to, IPPROTO_IPIP, inner), (args.to, 0))
        return
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.source:
        s.bind((args.source, 0))
    if args.method == "gue":
        s.sendto(inner, (args.to, args.port or 6080))
    elif args.method == "vxlan":
        if args.vni is None or not args.mac:
            sys.exit("tundecap send-syn: vxlan needs --vni and --mac")
        mac = bytes.fromhex(args.mac.replace(":", ""))
        frame = mac + bytes.fromhex("020000000001") + b"\x08\x00" + inner
        s.sendto(struct.pack("!II", 0x08000000, args.vni << 8) + frame, (args.to, args.port or 4789))
    else:
        sys.exit(f"tundecap send-syn: unknown method {args.method}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "send-syn":
        p = argparse.ArgumentParser(prog="tundecap.py send-syn",
                                    description="send one encapsulated TCP SYN (lab self-test)")
        p.add_argument("--method", required=True, choices=["ipip", "gue", "vxlan"])
        p.add_argument("--port", type=int, help="gue: default 6080; vxlan: default 4789")
        p.add_argument("--vni", type=int, help="vxlan: the VNI")
        p.add_argument("--mac", help="vxlan: the inner Ethernet destination")
        p.add_argument("--to", required=True, help="the tunnel endpoint (outer destination)")
        p.add_argument("--source", help="outer source address (default: the kernel's choice)")
        p.add_argument("--client", required=True, help="inner source address")
        p.add_argument("--vip", required=True, help="inner destination address")
        p.add_argument("--sport", type=int, default=45000)
        p.add_argument("--dport", type=int, default=80)
        send_syn(p.parse_args(sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dev", default="decap0", help="the TUN device to create (default decap0)")
    p.add_argument("--ipip", action="store_true", help="take IPIP (protocols 4 and 41)")
    p.add_argument("--gue", type=int, metavar="PORT", help="take GUE on this UDP port")
    args = p.parse_args()
    if not args.ipip and not args.gue:
        p.error("give --ipip, --gue PORT, or both")
    serve(args)


if __name__ == "__main__":
    main()
