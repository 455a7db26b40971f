"""Every unary method of lb.v1.LoadBalancer with an empty request and with
hostile ones (huge, odd-unicode and NUL-laden strings, out-of-range numbers
and enum values, broken TOML): each gets one specific status code, never
UNKNOWN or INTERNAL, every error message is at most about 1 KiB, nothing
refused changes the state, and lbd serves afterwards. Against the lbd that
LBD_SOCKET names, with lbd_client.connect's default options."""

import unittest

import grpc

import lbd_client
from lbd_client import pb
from test_client import socket_path

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED

# lbd's bound on a message (control/src/grpc.rs MAX_MESSAGE) plus the
# "... (N more bytes)" it appends when it cuts one.
MAX_MESSAGE = 1024 + 64

HUGE = "1" * 100_000
V = pb.VipKey(address="198.51.100.77", port=80, protocol=pb.TCP)
ABSENT = pb.VipKey(address="198.51.100.78", port=80, protocol=pb.TCP)
B = "192.0.2.77"
SETUP = """
[[vip]]
address = "198.51.100.77"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "192.0.2.77"
mac = "02:00:00:00:00:77"
"""
UNARY = [
    "CreateVip", "DeleteVip", "GetVip", "ListVips", "UpdateVip", "AddBackend", "RemoveBackend",
    "UpdateBackend", "Apply", "SetBackends", "Export", "ListHealth", "GetStats", "GetInfo",
]


def key(**kw):
    k = pb.VipKey()
    k.CopyFrom(V)
    for name, value in kw.items():
        setattr(k, name, value)
    return k


def add(address="192.0.2.78", vip=V, **kw):
    return pb.AddBackendRequest(vip=vip, address=address, **kw)


def add_check(**kw):
    return add(check=pb.HealthCheck(**kw))


def update(address=B, vip=V, **kw):
    return pb.UpdateBackendRequest(backend=pb.BackendKey(vip=vip, address=address), **kw)


def typed(vip_key=ABSENT, **kw):
    vip = pb.VipConfig(key=vip_key, **kw)
    return pb.ApplyRequest(config=pb.Config(vips=[vip]), dry_run=True)


def set_backends(vip=V, backends=None, **kw):
    if backends is None:
        backends = [pb.BackendConfig(address=B, mac="02:00:00:00:00:77")]
    return pb.SetBackendsRequest(vip=vip, backends=backends, **kw)


def broken_toml():
    # 5,000 characters: valid lines, then a table header that never closes.
    good = 'address = "198.51.100.1"\n' * 150
    text = "[[vip]]\n" + good + "[[vip.backend\n" + "x" * 5000
    return text[:5000]


# Field 1 = 1 (varint), field 15: 100,000 bytes, field 16: 64 NULs.
UNKNOWN_FIELDS = pb.Empty.FromString(
    b"\x08\x01" + b"\x7a\xa0\x8d\x06" + b"x" * 100_000 + b"\x82\x01\x40" + b"\0" * 64
)
assert len(UNKNOWN_FIELDS.SerializeToString()) > 100_000, "unknown fields are kept"

# (method, request, code, a part of the message)
EMPTY = [
    ("CreateVip", pb.CreateVipRequest(), INVALID, "vip: missing"),
    ("DeleteVip", pb.VipKey(), INVALID, "vip.address"),
    ("GetVip", pb.VipKey(), INVALID, "vip.address"),
    ("ListVips", pb.Empty(), OK, ""),
    ("UpdateVip", pb.UpdateVipRequest(), INVALID, "vip: missing"),
    ("AddBackend", pb.AddBackendRequest(), INVALID, "vip: missing"),
    ("RemoveBackend", pb.BackendKey(), INVALID, "vip: missing"),
    ("UpdateBackend", pb.UpdateBackendRequest(), INVALID, "backend: missing"),
    # An empty configuration is valid: as a dry run it says it would remove
    # everything (the real one is the last step of the test).
    ("Apply", pb.ApplyRequest(dry_run=True), OK, ""),
    ("SetBackends", pb.SetBackendsRequest(), INVALID, "vip: missing"),
    ("Export", pb.Empty(), OK, ""),
    ("ListHealth", pb.Empty(), OK, ""),
    ("GetStats", pb.Empty(), OK, ""),
    ("GetInfo", pb.Empty(), OK, ""),
]

HOSTILE = [
    # CreateVip
    ("CreateVip", pb.CreateVipRequest(vip=key(address=HUGE)), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="198.51.100.1\0")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="\u202e198.51.100.1")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="\uff11\uff19\uff18.51.100.1")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="198.51.100.1\r\n\x1b[2J")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="\U0001f4a9" * 30_000)), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="0.0.0.0")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="224.0.0.1")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="::1")), INVALID, "vip.address"),
    ("CreateVip", pb.CreateVipRequest(vip=key(port=70000)), INVALID, "vip.port"),
    ("CreateVip", pb.CreateVipRequest(vip=key(port=2**32 - 1)), INVALID, "vip.port"),
    ("CreateVip", pb.CreateVipRequest(vip=key(address="198.51.100.1", port=0)), INVALID, "vip.port"),
    ("CreateVip", pb.CreateVipRequest(vip=key(protocol=99)), INVALID, "vip.protocol"),
    ("CreateVip", pb.CreateVipRequest(vip=key(protocol=-1)), INVALID, "vip.protocol"),
    ("CreateVip", pb.CreateVipRequest(vip=key(protocol=pb.PROTOCOL_UNSPECIFIED)), INVALID, "vip.protocol"),
    ("CreateVip", pb.CreateVipRequest(vip=ABSENT, table_size=4294967291), INVALID, "vip.table_size"),
    ("CreateVip", pb.CreateVipRequest(vip=ABSENT, table_size=65536), INVALID, "vip.table_size"),
    ("CreateVip", pb.CreateVipRequest(vip=ABSENT, table_size=2), INVALID, "vip.table_size"),
    ("CreateVip", pb.CreateVipRequest(vip=ABSENT, tcp_idle_timeout_s=2**32 - 1), INVALID, "vip.tcp_idle_timeout_s"),
    ("CreateVip", pb.CreateVipRequest(vip=ABSENT, udp_idle_timeout_s=65536), INVALID, "vip.udp_idle_timeout_s"),
    ("CreateVip", pb.CreateVipRequest(vip=V), EXISTS, "already exists"),
    # DeleteVip, GetVip
    ("DeleteVip", ABSENT, NOT_FOUND, "not found"),
    ("DeleteVip", key(address=HUGE), INVALID, "vip.address"),
    ("DeleteVip", key(protocol=99), INVALID, "vip.protocol"),
    ("GetVip", ABSENT, NOT_FOUND, "not found"),
    ("GetVip", key(port=65536), INVALID, "vip.port"),
    ("GetVip", key(address="198.51.100.77\0"), INVALID, "vip.address"),
    ("GetVip", V, OK, ""),
    # AddBackend
    ("AddBackend", add(vip=ABSENT), NOT_FOUND, "not found"),
    ("AddBackend", add(vip=key(protocol=99)), INVALID, "vip.protocol"),
    ("AddBackend", add(address=HUGE), INVALID, "backend.address"),
    ("AddBackend", add(address="192.0.2.78\0"), INVALID, "backend.address"),
    ("AddBackend", add(address="\u0660\u0661.0.2.1"), INVALID, "backend.address"),
    ("AddBackend", add(address=B), EXISTS, "already exists"),
    ("AddBackend", add(address="198.51.100.77"), INVALID, "VIP's own address"),
    ("AddBackend", add(weight=10001), INVALID, "backend.weight"),
    ("AddBackend", add(weight=2**32 - 1), INVALID, "backend.weight"),
    ("AddBackend", add(mac="zz:zz:zz:zz:zz:zz"), INVALID, "backend.mac"),
    ("AddBackend", add(mac="ff:ff:ff:ff:ff:ff"), INVALID, "backend.mac"),
    ("AddBackend", add(mac="00:00:00:00:00:00"), INVALID, "backend.mac"),
    ("AddBackend", add(mac="02:00:00:00:00:01\0"), INVALID, "backend.mac"),
    ("AddBackend", add(mac=HUGE), INVALID, "backend.mac"),
    ("AddBackend", add_check(kind=HUGE), INVALID, "backend.check"),
    ("AddBackend", add_check(kind=""), INVALID, "backend.check.kind"),
    ("AddBackend", add_check(kind="none"), INVALID, "backend.check.kind"),
    ("AddBackend", add_check(kind="http:/a b"), INVALID, "backend.check"),
    ("AddBackend", add_check(kind="http:/a\0b"), INVALID, "backend.check"),
    ("AddBackend", add_check(kind="http:/\x1b[31m"), INVALID, "backend.check"),
    ("AddBackend", add_check(kind="http:/" + "a" * 100_000), INVALID, "backend.check"),
    ("AddBackend", add_check(kind="tcp", interval_ms=99), INVALID, "backend.check.interval_ms"),
    ("AddBackend", add_check(kind="tcp", interval_ms=2**32 - 1), INVALID, "backend.check.interval_ms"),
    ("AddBackend", add_check(kind="tcp", interval_ms=1000, timeout_ms=1001), INVALID, "backend.check.timeout_ms"),
    ("AddBackend", add_check(kind="tcp", rise=101), INVALID, "backend.check.rise"),
    ("AddBackend", add_check(kind="tcp", fall=2**32 - 1), INVALID, "backend.check.fall"),
    ("AddBackend", add_check(kind="tcp", port=65536), INVALID, "backend.check.port"),
    ("AddBackend", add_check(kind="http:/", http_status=70000), INVALID, "backend.check.http_status"),
    ("AddBackend", add_check(kind="http:/", http_status=99), INVALID, "backend.check.status"),
    ("AddBackend", add_check(kind="tcp", via="vip\0"), INVALID, "backend.check.via"),
    ("AddBackend", add_check(kind="udp", payload="p" * 2000), INVALID, "backend.check.payload"),
    ("AddBackend", add_check(kind="tcp", payload="p"), INVALID, "backend.check.payload"),
    # RemoveBackend
    ("RemoveBackend", pb.BackendKey(vip=V, address="192.0.2.99"), NOT_FOUND, "not found"),
    ("RemoveBackend", pb.BackendKey(vip=ABSENT, address=B), NOT_FOUND, "not found"),
    ("RemoveBackend", pb.BackendKey(vip=V, address=HUGE), INVALID, "backend.address"),
    ("RemoveBackend", pb.BackendKey(vip=V), INVALID, "backend.address"),
    # UpdateBackend
    ("UpdateBackend", update(address="192.0.2.99"), NOT_FOUND, "not found"),
    ("UpdateBackend", update(vip=ABSENT), NOT_FOUND, "not found"),
    ("UpdateBackend", update(address=HUGE), INVALID, "backend.address"),
    ("UpdateBackend", pb.UpdateBackendRequest(backend=pb.BackendKey(address=B)), INVALID, "vip: missing"),
    ("UpdateBackend", update(weight=10001), INVALID, "backend.weight"),
    ("UpdateBackend", update(mac="\0"), INVALID, "backend.mac"),
    ("UpdateBackend", update(mac="01:00:5e:00:00:01"), INVALID, "backend.mac"),
    ("UpdateBackend", update(check=pb.HealthCheck()), INVALID, "backend.check.kind"),
    ("UpdateBackend", update(check=pb.HealthCheck(kind="tcp", rise=0, fall=101)), INVALID, "backend.check.fall"),
    # Apply
    ("Apply", pb.ApplyRequest(toml=broken_toml()), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml=broken_toml(), dry_run=True), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml="\0" * 5000), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml='[[vip]]\naddress = "' + HUGE + '"\nport = 80\nprotocol = "tcp"\n'), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml='[[vip]]\naddress = "198.51.100.1"\nport = 70000\nprotocol = "tcp"\n'), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml='[[vip]]\naddress = "198.51.100.1"\nport = 80\nprotocol = "sctp"\n'), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml='[[vip]]\naddress = "198.51.100.1"\nport = 80\nprotocol = "tcp"\ntable_size = 100\n'), INVALID, "vip.table_size"),
    ("Apply", pb.ApplyRequest(toml=SETUP + 'weight = 10001\n'), INVALID, "backend.weight"),
    ("Apply", pb.ApplyRequest(toml=SETUP + 'check = { kind = "http:/\\u0000" }\n'), INVALID, "backend.check"),
    ("Apply", pb.ApplyRequest(toml=SETUP + SETUP), EXISTS, "vip 198.51.100.77:80/tcp already exists"),
    ("Apply", pb.ApplyRequest(toml="unknown_key = 1\n"), INVALID, "toml"),
    ("Apply", pb.ApplyRequest(toml=SETUP, expected_revision=2**64 - 1), ABORTED, "expected_revision: the configuration is at revision"),
    ("Apply", pb.ApplyRequest(toml=SETUP, config=pb.Config()), INVALID, "config: give toml or config"),
    ("Apply", pb.ApplyRequest(toml='local_addresses = ["192.0.2.250"]\n' + SETUP), INVALID, "toml.local_addresses"),
    ("Apply", typed(vip_key=key(address=HUGE)), INVALID, "config.vips[0].key.address"),
    ("Apply", typed(vip_key=key(protocol=99)), INVALID, "config.vips[0].key.protocol"),
    ("Apply", typed(table_size=2**32 - 1), INVALID, "config.vips[0].table_size"),
    ("Apply", typed(udp_idle_timeout_s=70_000), INVALID, "config.vips[0].udp_idle_timeout_s"),
    ("Apply", typed(backends=[pb.BackendConfig(address="192.0.2.1", mac="\0")]), INVALID, "config.vips[0].backends[0].mac"),
    ("Apply", typed(backends=[pb.BackendConfig(address="192.0.2.1")] * 2), INVALID, "config.vips[0].backends[1]"),
    # SetBackends
    ("AddBackend", add(agent=pb.AgentCheck(kind=HUGE)), INVALID, "backend.agent.kind"),
    ("AddBackend", add(agent=pb.AgentCheck(kind="tcp", port=70_000)), INVALID, "backend.agent.port"),
    ("AddBackend", add(min_flows=5), INVALID, "backend.min_flows"),
    ("UpdateBackend", update(min_flows=2**32 - 1), INVALID, "backend.min_flows"),
    ("UpdateVip", pb.UpdateVipRequest(vip=ABSENT), NOT_FOUND, "vip 198.51.100.78:80/tcp not found"),
    ("UpdateVip", pb.UpdateVipRequest(vip=V, quic_server_id_len=2), INVALID, "vip.quic_server_id_len"),
    ("UpdateVip", pb.UpdateVipRequest(vip=V, quic_server_id_len=2**32 - 1), INVALID, "vip.quic_server_id_len"),
    ("UpdateVip", pb.UpdateVipRequest(vip=V, drain_flows=99), INVALID, "vip.drain_flows"),
    ("AddBackend", add(server_id="0x"), INVALID, "backend.server_id"),
    ("UpdateBackend", update(server_id="\0"), INVALID, "backend.server_id"),
    ("SetBackends", set_backends(vip=ABSENT), NOT_FOUND, "vip 198.51.100.78:80/tcp not found"),
    ("SetBackends", set_backends(vip=key(protocol=99)), INVALID, "vip.protocol"),
    ("SetBackends", set_backends(expected_revision=0), ABORTED, "expected_revision"),
    ("SetBackends", set_backends(backends=[pb.BackendConfig(address=HUGE)]), INVALID, "backends[0].address"),
    ("SetBackends", set_backends(backends=[pb.BackendConfig(address=B, weight=2**32 - 1)]), INVALID, "backends[0].weight"),
    ("SetBackends", set_backends(backends=[pb.BackendConfig(address="198.51.100.77")]), INVALID, "backends[0].address"),
    ("SetBackends", set_backends(backends=[pb.BackendConfig(address=B)] * 2), INVALID, "backends[1].address"),
    ("SetBackends", set_backends(dry_run=True), OK, ""),
    ("SetBackends", set_backends(), OK, ""),
    # The read-only methods take Empty: hostile ones carry unknown fields
    # (a varint, 100 KB of bytes, a group of NULs), which proto3 ignores.
    ("ListVips", UNKNOWN_FIELDS, OK, ""),
    ("Export", UNKNOWN_FIELDS, OK, ""),
    ("ListHealth", UNKNOWN_FIELDS, OK, ""),
    ("GetStats", UNKNOWN_FIELDS, OK, ""),
    ("GetInfo", UNKNOWN_FIELDS, OK, ""),
]


class Probe(unittest.TestCase):
    def setUp(self):
        self.lb = lbd_client.connect(socket_path())
        self.addCleanup(self.lb.close)

    def call(self, method, request):
        """The status code and message of one call."""
        try:
            getattr(self.lb, method)(request, timeout=10)
            return OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""

    def test_the_probe_covers_every_unary_method(self):
        service = pb.DESCRIPTOR.services_by_name["LoadBalancer"]
        unary = [m.name for m in service.methods if not m.server_streaming and not m.client_streaming]
        self.assertEqual(sorted(unary), sorted(UNARY))
        for cases in (EMPTY, HOSTILE):
            self.assertEqual({c[0] for c in cases}, set(UNARY))

    def test_empty_and_hostile_requests_get_specific_codes_and_lbd_serves_on(self):
        r = self.lb.Apply(pb.ApplyRequest(toml=SETUP), timeout=10)
        before = self.lb.ListVips(pb.Empty(), timeout=10)
        self.assertEqual(len(before.vips), 1, f"the probe's VIP alone ({r.changes})")
        generation = self.lb.GetInfo(pb.Empty(), timeout=10).snapshot_generation

        wrong = []
        for method, request, want, part in EMPTY + HOSTILE:
            code, message = self.call(method, request)
            size = len(message.encode())
            shown = " ".join(str(request).split())[:160]
            if code != want or part not in message:
                wrong.append(f"{method}({shown}): {code} {message[:200]!r}, expected {want} {part!r}")
            if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                wrong.append(f"{method}({shown}): {code}")
            if size > MAX_MESSAGE:
                wrong.append(f"{method}({shown}): a message of {size} bytes")
        self.assertEqual(wrong, [], "\n".join(wrong))

        # Nothing refused (nor the dry run) changed anything.
        self.assertEqual(self.lb.ListVips(pb.Empty(), timeout=10), before)
        self.assertEqual(self.lb.GetInfo(pb.Empty(), timeout=10).snapshot_generation, generation)
        # lbd serves on.
        self.assertEqual(self.lb.health(), lbd_client.SERVING)
        self.assertEqual(self.lb.health("lb.v1.LoadBalancer"), lbd_client.SERVING)
        self.assertEqual(self.lb.GetInfo(pb.Empty(), timeout=10).port, "net_null0")
        self.assertEqual(len(self.lb.GetStats(pb.Empty(), timeout=10).workers), 1)
        # Applying the empty configuration for real removes everything.
        r = self.lb.Apply(pb.ApplyRequest(), timeout=10)
        self.assertEqual(len(r.changes), 1, r.changes)
        self.assertEqual(list(self.lb.ListVips(pb.Empty(), timeout=10).vips), [])
        self.assertNotIn("[[vip]]", self.lb.Export(pb.Empty(), timeout=10).toml)


if __name__ == "__main__":
    unittest.main()
