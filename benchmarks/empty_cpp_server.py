"""The C++ floor for server CPU per request (issue 18): ``empty_cpp/empty.cc``, a gRPC C++ callback-API server
answering the same constant bytes as ``empty_server.py``, without parsing the request.

Builds ``empty.cc`` into ``benchmarks/out/empty_cpp/empty`` (g++ and the system's grpc++, via pkg-config) when
the binary is missing or older than the source, writes every method's answer with the protobuf classes of
``empty_server.py`` (so the C++ needs no protobuf), then becomes the server. Exit status 2, with one line,
where g++, pkg-config or grpc++ are missing.

    python benchmarks/empty_cpp_server.py --port 0 [--width 11]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "empty_cpp" / "empty.cc"
OUT = HERE / "out" / "empty_cpp"
BINARY = OUT / "empty"


def missing() -> str | None:
    """Why it cannot be built here, or None."""
    for tool in ("g++", "pkg-config"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(["pkg-config", "--exists", "grpc++", "grpc"], capture_output=True)
    return "pkg-config finds no grpc++ (apt-get install libgrpc++-dev)" if probe.returncode else None


def build() -> Path:
    """The binary, compiled first when missing or older than the source (into a temporary name, then renamed,
    so that two launchers at once never run a half-written file)."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    reason = missing()
    if reason:
        print(f"empty-cpp: cannot build {SOURCE.name}: {reason}", file=sys.stderr)
        sys.exit(2)
    OUT.mkdir(parents=True, exist_ok=True)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++", "grpc"], capture_output=True, text=True,
                           check=True).stdout.split()
    partial = OUT / f"empty.{os.getpid()}.tmp"
    done = subprocess.run(["g++", "-O2", "-std=c++17", "-o", str(partial), str(SOURCE), *flags],
                          capture_output=True, text=True)
    if done.returncode:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"empty-cpp: g++ failed on {SOURCE}:\n{done.stderr[-4000:]}")
    os.replace(partial, BINARY)
    return BINARY


def write_answers(model: str, width: int) -> Path:
    """Each method's serialized answer as ``DIR/<Method>.bin``: the very messages empty_server.py returns."""
    sys.path.insert(0, str(HERE))
    from empty_server import answers

    folder = OUT / "answers" / f"{model}-w{width}"
    folder.mkdir(parents=True, exist_ok=True)
    for method, message in answers(model, width).items():
        partial = folder / f"{method}.bin.{os.getpid()}"
        partial.write_bytes(message.SerializeToString())
        os.replace(partial, folder / f"{method}.bin")
    return folder


def main() -> None:
    sys.path.insert(0, str(HERE))
    from empty_server import arguments

    args = arguments(__doc__)
    binary = build()
    folder = write_answers(args.model, args.width)
    sys.stdout.flush()
    os.execv(binary, [str(binary), "--answers", str(folder), "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
