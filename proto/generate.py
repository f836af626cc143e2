"""Regenerate the Python stubs in proto/ from the .proto files beside them.

Run ``make proto`` (it installs the pinned grpcio-tools into a throwaway venv). The generated
files are committed so that ``pip install .`` needs no code generator. Two edits follow protoc:
imports between generated modules become package imports (``driftline.proto``), and the
messages register in driftline's private descriptor pool (see ``_pool.py``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTOS = ("model_config.proto", "grpc_service.proto", "driftline.proto")


def _rewrite(path: Path) -> None:
    text = path.read_text()
    text = re.sub(r"^import (\w+_pb2) as", r"from driftline.proto import \1 as", text, flags=re.M)
    if path.name.endswith("_pb2.py"):
        text = text.replace(
            "from google.protobuf.internal import builder as _builder\n",
            "from google.protobuf.internal import builder as _builder\nfrom driftline.proto._pool import POOL\n",
        )
        text = text.replace("_descriptor_pool.Default()", "POOL")
    path.write_text(text)


def main() -> int:
    for name in PROTOS:
        args = ["protoc", f"-I{HERE}", f"--python_out={HERE}", f"--pyi_out={HERE}", f"--grpc_python_out={HERE}", name]
        if protoc.main(args) != 0:
            print(f"protoc failed on {name}", file=sys.stderr)
            return 1
    for path in [*HERE.glob("*_pb2*.py"), *HERE.glob("*_pb2.pyi")]:
        _rewrite(path)
    # model_config.proto declares no service: its empty _grpc module is noise.
    (HERE / "model_config_pb2_grpc.py").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
