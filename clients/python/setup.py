"""Builds lbd-client: the gRPC stubs are generated from proto/lb.proto (the
repository's, or the file LBD_PROTO names) with grpcio-tools into the build
tree, so they always match the proto they were built from and none is kept
in the repository. Everything else is in pyproject.toml."""

import os
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.environ.get("LBD_PROTO") or os.path.join(HERE, "..", "..", "proto", "lb.proto")


def generate(out_dir):
    """lb_pb2.py, lb_pb2.pyi and lb_pb2_grpc.py of lbd_client into out_dir."""
    from grpc_tools import protoc

    if not os.path.isfile(PROTO):
        raise SystemExit(
            f"lbd-client: {PROTO} not found: build from the lbd repository "
            "(clients/python) or set LBD_PROTO to lb.proto"
        )
    os.makedirs(os.path.join(out_dir, "lbd_client"), exist_ok=True)
    # protoc names the modules after the proto's path under -I: placed at
    # lbd_client/lb.proto, the stubs import each other as lbd_client.lb_pb2
    # (the package lb.v1, and so the wire, is the same).
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "lbd_client"))
        proto = os.path.join(tmp, "lbd_client", "lb.proto")
        shutil.copyfile(PROTO, proto)
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                proto,
            ]
        )
    if rc != 0:
        raise SystemExit(f"lbd-client: protoc failed on {PROTO} (exit {rc})")


def requirements():
    """The runtime the stubs need: grpcio at least the generator's version
    (the _grpc module checks it), protobuf at least the build's."""
    from importlib.metadata import version

    return [f"grpcio>={version('grpcio-tools')}", f"protobuf>={version('protobuf')}"]


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        generate(self.build_lib)


setup(cmdclass={"build_py": BuildWithStubs}, install_requires=requirements())
