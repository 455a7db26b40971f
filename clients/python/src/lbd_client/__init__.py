"""A thin Python client of lbd's ``lb.v1`` gRPC API.

The stubs (``lbd_client.lb_pb2``, ``lbd_client.lb_pb2_grpc``) are generated
from ``proto/lb.proto`` when the package is built; its comments are the API
reference. ``connect`` opens a channel with the options lbd needs::

    import lbd_client
    from lbd_client import pb

    with lbd_client.connect("/run/lbd.sock") as lb:
        vip = pb.VipKey(address="198.51.100.10", port=443, protocol=pb.TCP)
        lb.CreateVip(pb.CreateVipRequest(vip=vip))

    # lbd's TCP listener (--grpc-listen), mutual TLS:
    lb = lbd_client.connect("10.0.0.5:50051", ca="ca.pem", cert="client.pem", key="client.key")
"""

import os

import grpc

from . import lb_pb2 as pb
from . import lb_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_SOCKET", "Client", "connect", "tls_credentials", "pb", "pb_grpc", "SERVING", "NOT_SERVING"]

# lbd's --grpc-socket default.
DEFAULT_SOCKET = "/run/lbd.sock"

# grpc.health.v1 HealthCheckResponse.ServingStatus values.
SERVING = 1
NOT_SERVING = 2


def unix_target(target):
    """The gRPC target for ``target``: ``unix:...`` as given, a socket path
    (absolute, relative or an existing file) as ``unix://ABSPATH``, anything
    else (``host:port``, ``dns:///...``) unchanged; and whether it is a Unix
    socket."""
    if target.startswith("unix:") or target.startswith("unix-abstract:"):
        return target, True
    if target.startswith(("/", "./", "../")) or os.path.exists(target):
        return "unix://" + os.path.abspath(target), True
    return target, False


def _pem(value, what):
    """PEM bytes: ``value`` as given if bytes, else read from the path."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"reading the {what} {value!r}: {e}") from e


def tls_credentials(ca, cert, key):
    """``grpc.ssl_channel_credentials`` for lbd's TLS listener: trust the CA
    ``ca`` (the one that signed lbd's --tls-cert; None: the system's roots)
    and present the client certificate ``cert`` with its key ``key`` (one
    of the CA lbd's --tls-client-ca names). Each a PEM path or PEM bytes."""
    if cert is None or key is None:
        raise ValueError("lbd's TLS listener requires a client certificate: give cert and key")
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else _pem(ca, "CA certificate"),
        private_key=_pem(key, "client key"),
        certificate_chain=_pem(cert, "client certificate"),
    )


def connect(target=DEFAULT_SOCKET, *, ca=None, cert=None, key=None, credentials=None, options=()):
    """A ``Client`` of the lbd at ``target``: a Unix socket path or
    ``unix:`` target (the default, ``/run/lbd.sock``), or ``host:port`` of
    its TLS listener (lbd --grpc-listen) with ``ca``, ``cert`` and ``key``
    (PEM paths or bytes, see ``tls_credentials``) or ready ``credentials``
    (``grpc.ssl_channel_credentials``). lbd's certificate is checked
    against ``target``'s host (an IP address against an IP subjectAltName).

    On a Unix socket the HTTP/2 authority is set to ``localhost``: grpcio
    would send the percent-encoded socket path, which lbd's HTTP/2 library
    rejects (every call would fail with RST_STREAM). ``options`` are passed
    to the channel and win over that default."""
    target, unix = unix_target(target)
    tls = ca is not None or cert is not None or key is not None
    if tls and credentials is not None:
        raise ValueError("give either ca/cert/key or credentials, not both")
    if tls:
        if unix:
            raise ValueError(f"{target}: lbd's Unix socket is not TLS; ca/cert/key are for host:port")
        credentials = tls_credentials(ca, cert, key)
    opts = list(options)
    if unix and not any(name == "grpc.default_authority" for name, _ in opts):
        opts.append(("grpc.default_authority", "localhost"))
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    return Client(channel)


def _raw(b):
    return b


class Client:
    """The ``lb.v1.LoadBalancer`` methods (``client.CreateVip(request)``,
    ``client.Watch(pb.Empty())``, ... as on ``pb_grpc.LoadBalancerStub``) on
    one channel, plus ``health``. A context manager that closes the channel."""

    def __init__(self, channel):
        self.channel = channel
        self.stub = pb_grpc.LoadBalancerStub(channel)
        # grpc.health.v1.Health/Check without another package: the request
        # {service} and the response {status} are one field each (1).
        self._health = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=_raw, response_deserializer=_raw
        )

    def __getattr__(self, name):
        return getattr(self.stub, name)

    def health(self, service="", timeout=10):
        """grpc.health.v1 Check of ``service`` ("" or "lb.v1.LoadBalancer"):
        ``SERVING`` (1) or ``NOT_SERVING`` (2)."""
        name = service.encode()
        if len(name) > 127:
            raise ValueError("service name too long")
        request = (b"\x0a" + bytes([len(name)]) + name) if name else b""
        reply = self._health(request, timeout=timeout)
        # Field 1, varint: 0x08 then the status (0, absent, is UNKNOWN).
        if reply[:1] == b"\x08" and len(reply) >= 2:
            return reply[1]
        return 0

    def wait_ready(self, timeout=10):
        """Block until the channel is connected (grpc.FutureTimeoutError after ``timeout``)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
