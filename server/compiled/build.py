"""Build the compiled gRPC front end (issue 18) into this folder: ``python server/compiled/build.py [--asan]``.

Needs cmake, a C++17 compiler, pybind11 (pip) and the system's gRPC C++ and protobuf libraries with pkg-config
(Debian: libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev pkg-config). Without them it says so in one line
and exits 0 unless --strict: the package serves on the Python door without the extension.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
APT_PACKAGES = ("cmake", "g++", "pkg-config", "libgrpc++-dev", "libprotobuf-dev", "protobuf-compiler")


def missing() -> str | None:
    """What the build needs and this machine lacks, or None."""
    for tool in ("cmake", "pkg-config", "protoc", "c++"):
        if shutil.which(tool) is None:
            return tool
    if subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"]).returncode != 0:
        return "the gRPC C++ and protobuf libraries (pkg-config grpc++ protobuf)"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 (pip install pybind11)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asan", action="store_true", help="build with AddressSanitizer (for the fuzz tests)")
    parser.add_argument("--strict", action="store_true", help="fail when the libraries are missing")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--install-libraries", action="store_true",
                        help="install the missing libraries with apt-get first, where apt exists and we are root")
    args = parser.parse_args()
    lack = missing()
    if lack is not None and args.install_libraries and shutil.which("apt-get") and os.geteuid() == 0:
        print(f"driftline: {lack} missing; installing {' '.join(APT_PACKAGES)} with apt-get")
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        if (subprocess.run(["apt-get", "update", "-qq"], **quiet).returncode == 0
                and subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], **quiet).returncode == 0):
            lack = missing()
    if lack is not None:
        print(f"driftline: compiled gRPC front end not built ({lack} missing); serving uses the Python door")
        return 1 if args.strict else 0
    import pybind11

    build = HERE / ("build-asan" if args.asan else "build")
    try:
        subprocess.run(["cmake", "-S", str(HERE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                        f"-DDOOR_ASAN={'ON' if args.asan else 'OFF'}"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "-j", str(args.jobs)], check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        print(f"driftline: compiled gRPC front end not built: {' '.join(exc.cmd[:2])} failed (output above); "
              "serving uses the Python door")
        return 1 if args.strict else 0
    built = next(build.glob("_door*.so"))
    if args.asan:  # not put in place: it loads only with the sanitizer's runtime preloaded (README, Serving)
        print(f"driftline: AddressSanitizer build of the compiled gRPC front end: {built}")
        return 0
    target = HERE / built.name
    # A new file renamed over the old one: a running server keeps the module it mapped (copying in place would not).
    staged = target.with_suffix(".new")
    shutil.copy2(built, staged)
    os.replace(staged, target)
    print(f"driftline: compiled gRPC front end built: {target.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
