#!/usr/bin/env python3
"""lbd from Python: create a VIP, add backends, read the stats, follow the
events. As root (lbd's socket is mode 0600), against a running lbd:

    python3 quickstart.py [SOCKET]        # default /run/lbd.sock

It leaves the VIP in place; `lbctl vip del 198.51.100.10:443/tcp` removes it.
"""

import sys
import threading

import grpc

import lbd_client
from lbd_client import pb

VIP = pb.VipKey(address="198.51.100.10", port=443, protocol=pb.TCP)


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else lbd_client.DEFAULT_SOCKET
    with lbd_client.connect(target) as lb:
        info = lb.GetInfo(pb.Empty(), timeout=5)
        print(f"lbd on {info.port} ({info.mac}), workers on lcores {list(info.worker_lcores)}")

        # Follow the events in the background: lbd has subscribed the
        # stream once its headers arrive, so no change below is missed.
        events = lb.Watch(pb.Empty())
        events.initial_metadata()
        changes = threading.Semaphore(0)

        def follow():
            try:
                for e in events:
                    kind = e.WhichOneof("kind")
                    if kind == "config":
                        print(f"  event: {e.config.what} (generation {e.config.generation})")
                        changes.release()
                    elif kind == "backend":
                        health = pb.Health.Name(e.backend.health)
                        print(f"  event: {e.backend.address} {health}: {e.backend.detail}")
                    else:
                        print(f"  event: {kind}")
            except grpc.RpcError:
                pass  # cancelled below

        thread = threading.Thread(target=follow)
        thread.start()

        try:
            lb.CreateVip(pb.CreateVipRequest(vip=VIP), timeout=5)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            print(f"{e.details()}: reusing it")
        for address, weight in [("192.0.2.11", 1), ("192.0.2.12", 2)]:
            try:
                lb.AddBackend(
                    pb.AddBackendRequest(
                        vip=VIP,
                        address=address,
                        weight=weight,
                        check=pb.HealthCheck(kind="http:/health", interval_ms=1000),
                    ),
                    timeout=5,
                )
            except grpc.RpcError as e:
                # Refusals name the field: e.g. INVALID_ARGUMENT backend.weight: ...
                print(f"AddBackend {address}: {e.code().name} {e.details()}")

        vip = lb.GetVip(VIP, timeout=5)
        for b in vip.backends:
            print(f"backend {b.address} weight {b.weight} {pb.BackendState.Name(b.state)} "
                  f"mac {b.effective_mac or '(resolving)'}")
        stats = lb.GetStats(pb.Empty(), timeout=5)
        for s in stats.vips:
            if s.key == VIP:
                print(f"VIP packets {s.packets}, new flows {s.new_flows}")
        for w in stats.workers:
            print(f"worker {w.lcore}: rx {w.rx_packets}, forwarded {w.forwarded}, "
                  f"active flows {w.active_flows}/{w.flow_capacity}")

        # The events of the three changes, then stop following.
        for _ in range(3):
            if not changes.acquire(timeout=5):
                print("  (fewer events than changes within 5 s: some were refused)")
                break
        events.cancel()
        thread.join()


if __name__ == "__main__":
    main()
