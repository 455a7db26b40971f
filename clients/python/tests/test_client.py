"""lbd_client against a running lbd: LBD_SOCKET names its API socket, and
LBD_TLS_ADDR its TCP listener (mutual TLS) with LBD_TLS_CA (the CA of
lbd's certificate and of the client's), LBD_TLS_CERT and LBD_TLS_KEY (a
client certificate); the workflow runs on both. The Rust test
control/tests/python_client.rs starts lbd on DPDK's net_null with both
listeners and runs this suite. Default client options only:
lbd_client.connect."""

import os
import queue
import threading
import unittest

import grpc

import lbd_client
from lbd_client import pb


def socket_path():
    path = os.environ.get("LBD_SOCKET")
    if not path:
        raise RuntimeError("LBD_SOCKET must name a running lbd's API socket")
    return path


def tls_env():
    """The TLS listener's address and the CA, client certificate and key
    paths from the environment."""
    names = ("LBD_TLS_ADDR", "LBD_TLS_CA", "LBD_TLS_CERT", "LBD_TLS_KEY")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} must name a running lbd's TLS listener and certificates")
    return tuple(os.environ[n] for n in names)


class Targets(unittest.TestCase):
    def test_paths_become_unix_targets_and_others_stay(self):
        self.assertEqual(lbd_client.unix_target("/run/lbd.sock"), ("unix:///run/lbd.sock", True))
        self.assertEqual(lbd_client.unix_target("unix:/x.sock"), ("unix:/x.sock", True))
        target, unix = lbd_client.unix_target("./lbd.sock")
        self.assertEqual(target, "unix://" + os.path.abspath("lbd.sock"))
        self.assertTrue(unix)
        self.assertEqual(lbd_client.unix_target("127.0.0.1:50051"), ("127.0.0.1:50051", False))


class Client(unittest.TestCase):
    VIP = pb.VipKey(address="198.51.100.40", port=443, protocol=pb.TCP)

    def setUp(self):
        self.lb = lbd_client.connect(socket_path())
        self.addCleanup(self.lb.close)

    def test_vip_backends_events_stats_info_export(self):
        lb = self.lb
        info = lb.GetInfo(pb.Empty(), timeout=10)
        self.assertEqual(info.port, "net_null0")
        self.assertEqual(list(info.worker_lcores), [1])
        self.assertTrue(info.state_file.endswith("state.toml"), info.state_file)
        self.assertEqual(len(info.config_digest), 64)
        self.assertEqual(lb.health(), lbd_client.SERVING)
        self.assertEqual(lb.health("lb.v1.LoadBalancer"), lbd_client.SERVING)

        # Follow the events; the headers come once lbd has subscribed the
        # stream, so every change after them is seen.
        events = lb.Watch(pb.Empty(), timeout=30)
        self.addCleanup(events.cancel)
        events.initial_metadata()
        seen = queue.Queue()

        def follow():
            try:
                for e in events:
                    seen.put(e)
            except grpc.RpcError:
                pass

        threading.Thread(target=follow, daemon=True).start()

        vip = lb.CreateVip(pb.CreateVipRequest(vip=self.VIP, udp_idle_timeout_s=30), timeout=10)
        self.assertEqual(vip.key, self.VIP)
        self.assertEqual(vip.table_size, 65537, "the default table")
        self.assertEqual(len(vip.backends), 0)
        b = lb.AddBackend(
            pb.AddBackendRequest(vip=self.VIP, address="192.0.2.41", mac="02:00:00:00:00:41"),
            timeout=10,
        )
        self.assertEqual((b.weight, b.effective_mac, b.state), (1, "02:00:00:00:00:41", pb.UP))
        b = lb.AddBackend(pb.AddBackendRequest(vip=self.VIP, address="192.0.2.42", weight=2), timeout=10)
        self.assertEqual((b.weight, b.effective_mac), (2, ""), "unresolved until ARP answers")
        b = lb.UpdateBackend(
            pb.UpdateBackendRequest(
                backend=pb.BackendKey(vip=self.VIP, address="192.0.2.42"), drain=True
            ),
            timeout=10,
        )
        self.assertEqual(b.state, pb.DRAINING)

        want = [
            "vip 198.51.100.40:443/tcp created",
            "backend 192.0.2.41 added to 198.51.100.40:443/tcp",
            "backend 192.0.2.42 added to 198.51.100.40:443/tcp",
            "backend 192.0.2.42 of 198.51.100.40:443/tcp updated",
        ]
        got = []
        generations = []
        while len(got) < len(want):
            try:
                e = seen.get(timeout=5)
            except queue.Empty:
                self.fail(f"no event within 5 s; had {got}")
            if e.WhichOneof("kind") == "config":
                got.append(e.config.what)
                generations.append(e.config.generation)
                self.assertGreater(e.time_ms, 0)
        self.assertEqual(got, want)
        self.assertEqual(generations, sorted(set(generations)), "one generation per change")
        self.assertLessEqual(generations[-1], lb.GetInfo(pb.Empty(), timeout=10).snapshot_generation)

        vips = {(v.key.address, v.key.port): v for v in lb.ListVips(pb.Empty(), timeout=10).vips}
        v = vips[("198.51.100.40", 443)]
        self.assertEqual(v.udp_idle_timeout_s, 30)
        self.assertEqual(
            sorted((b.address, b.weight, b.drain) for b in v.backends),
            [("192.0.2.41", 1, False), ("192.0.2.42", 2, True)],
        )
        self.assertEqual(lb.GetVip(self.VIP, timeout=10), v)

        stats = lb.GetStats(pb.Empty(), timeout=10)
        self.assertEqual(len(stats.workers), 1)
        w = stats.workers[0]
        self.assertEqual(w.lcore, 1)
        self.assertGreater(w.rx_packets, 0, "net_null keeps the worker busy")
        self.assertGreater(w.flow_capacity, 0)
        self.assertIn("not_for_us", {d.name for d in w.drops})
        s = [s for s in stats.vips if s.key == self.VIP]
        self.assertEqual(len(s), 1, stats.vips)
        self.assertEqual(sorted(b.address for b in s[0].backends), ["192.0.2.41", "192.0.2.42"])
        self.assertEqual(s[0].packets, 0, "net_null sends nothing for the VIP")

        toml = lb.Export(pb.Empty(), timeout=10).toml
        self.assertIn('address = "198.51.100.40"', toml)
        self.assertIn('mac = "02:00:00:00:00:41"', toml)
        self.assertIn('state = "draining"', toml)
        # The export applied back is no change.
        r = lb.Apply(pb.ApplyRequest(toml=toml), timeout=10)
        self.assertEqual(list(r.changes), [])

        lb.DeleteVip(self.VIP, timeout=10)
        with self.assertRaises(grpc.RpcError) as e:
            lb.GetVip(self.VIP, timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)


class ClientOverTls(Client):
    """The same workflow on lbd's TCP listener, over mutual TLS."""

    def setUp(self):
        addr, ca, cert, key = tls_env()
        self.lb = lbd_client.connect(addr, ca=ca, cert=cert, key=key)
        self.addCleanup(self.lb.close)

    def test_pem_bytes_work_as_paths_do(self):
        addr, ca, cert, key = tls_env()
        pems = []
        for path in (ca, cert, key):
            with open(path, "rb") as f:
                pems.append(f.read())
        with lbd_client.connect(addr, ca=pems[0], cert=pems[1], key=pems[2]) as lb:
            self.assertEqual(lb.GetInfo(pb.Empty(), timeout=10).port, "net_null0")

    def test_a_client_without_a_certificate_is_refused(self):
        addr, ca, _, _ = tls_env()
        with self.assertRaises(ValueError):
            lbd_client.connect(addr, ca=ca)
        # Without a client certificate the handshake fails: lbd serves none.
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with lbd_client.connect(addr, credentials=creds) as lb:
            with self.assertRaises(grpc.RpcError) as e:
                lb.GetInfo(pb.Empty(), timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_tls_is_not_for_the_unix_socket(self):
        _, ca, cert, key = tls_env()
        with self.assertRaises(ValueError):
            lbd_client.connect(socket_path(), ca=ca, cert=cert, key=key)


if __name__ == "__main__":
    unittest.main()
