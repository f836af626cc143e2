#!/bin/sh
# How the image installs driftline. The Dockerfile runs this file and tests/deploy runs the same file,
# so the image and the tests cannot drift apart.
#
#   install.sh wheel SRC OUT             build driftline's wheel from the source tree SRC into OUT (builder stage)
#   install.sh runtime DIST PREFIX cpu|cuda
#                                        a virtual environment at PREFIX holding the wheel found in DIST, its s3
#                                        extra (registries on object stores), and for cuda the GPU packages
#
# $PYTHON names the interpreter (default python3). pip reads its usual PIP_* variables.
set -eu

PYTHON="${PYTHON:-python3}"

wheel() {
    src="$1" out="$2"
    mkdir -p "$out"
    "$PYTHON" -m pip wheel --no-deps --no-cache-dir --wheel-dir "$out" "$src"
}

runtime() {
    dist="$1" prefix="$2" device="$3"
    set -- "$dist"/driftline-*.whl
    if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
        echo "install.sh: expected one driftline wheel in $dist, found: $*" >&2
        exit 2
    fi
    found="$1"
    "$PYTHON" -m venv "$prefix"
    pip="$prefix/bin/python -m pip"
    # A base image's bundled pip may be old; older resolvers backtrack for many minutes over these dependencies.
    $pip install --no-cache-dir --upgrade "pip>=25"
    $pip install --no-cache-dir "$found[s3]"
    case "$device" in
        cpu)
            # The wheel asks for onnxruntime-gpu on Linux x86_64 (one package for laptops with and without a GPU).
            # A CPU image has no use for its ~300 MB of CUDA kernels: the CPU build of the same release provides
            # the same `onnxruntime` module.
            version="$($prefix/bin/python -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))' \
                       2>/dev/null || true)"
            if [ -n "$version" ]; then
                $pip uninstall --yes onnxruntime-gpu
                $pip install --no-cache-dir "onnxruntime==$version"
            fi
            ;;
        cuda)
            # onnxruntime-gpu comes with the wheel; numba's CUDA target (with its own NVVM and NVRTC, which a
            # CUDA runtime image lacks) and CuPy, for CUDA 13 as onnxruntime-gpu's release is built for.
            $pip install --no-cache-dir "numba-cuda[cu13]>=0.20" "cupy-cuda13x>=13.6"
            ;;
        *)
            echo "install.sh: device must be cpu or cuda, not '$device'" >&2
            exit 2
            ;;
    esac
}

command="${1:-}"
case "$command" in
    wheel) [ "$#" -eq 3 ] || { echo "usage: install.sh wheel SRC OUT" >&2; exit 2; }; wheel "$2" "$3" ;;
    runtime) [ "$#" -eq 4 ] || { echo "usage: install.sh runtime DIST PREFIX cpu|cuda" >&2; exit 2; }
             runtime "$2" "$3" "$4" ;;
    *) echo "usage: install.sh wheel SRC OUT | install.sh runtime DIST PREFIX cpu|cuda" >&2; exit 2 ;;
esac
