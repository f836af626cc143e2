#!/bin/sh
# How the image installs driftline. The Dockerfile runs this file and tests/deploy runs the same file,
# so the image and the tests cannot drift apart.
#
#   install.sh wheel SRC OUT             build driftline's wheel from the source tree SRC into OUT (builder stage)
#   install.sh runtime DIST PREFIX cpu|cuda
#                                        a virtual environment at PREFIX holding the wheel found in DIST, its s3
#                                        extra (registries on object stores), and for cuda the GPU packages
#   install.sh door SRC OUT              build the compiled gRPC front end (SRC/server/compiled) with apt's gRPC C++
#                                        and protobuf; OUT gets the extension and runtime-packages, the Debian
#                                        packages holding the libraries it loads that the base image lacks
#   install.sh door-runtime DOOR PREFIX  install those packages (the ones missing) and put the extension into the
#                                        environment at PREFIX; fails unless it then imports
#   install.sh door-packages EXTENSION   print the Debian packages holding every shared library EXTENSION loads
#
# $PYTHON names the interpreter (default python3). pip reads its usual PIP_* variables.
set -eu

PYTHON="${PYTHON:-python3}"
# What building the door takes (server/compiled/build.py's APT_PACKAGES, and make for cmake's generator).
DOOR_BUILD_PACKAGES="cmake g++ make pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler"

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

door() {
    src="$1" out="$2"
    mkdir -p "$out"
    # Built on the runtime's own base (the Dockerfile's door stage), so the extension matches its Python and its
    # distribution's library versions; what the base already holds need not be installed again at runtime.
    dpkg-query -W -f '${Package}\n' | sort -u > "$out/base-packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086
    apt-get install --yes --no-install-recommends $DOOR_BUILD_PACKAGES
    include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [ -f "$include/Python.h" ] || apt-get install --yes --no-install-recommends python3-dev
    "$PYTHON" -m venv "$out/.build-env"
    "$out/.build-env/bin/python" -m pip install --no-cache-dir "pybind11>=2.11"
    "$out/.build-env/bin/python" "$src/server/compiled/build.py" --strict --jobs "$(nproc)"
    rm -rf "$out/.build-env"
    cp "$src"/server/compiled/_door*.so "$out/"
    set -- "$out"/_door*.so
    door_packages "$1" > "$out/needed-packages"
    comm -23 "$out/needed-packages" "$out/base-packages" > "$out/runtime-packages"
    echo "install.sh: the compiled gRPC front end needs at runtime:" $(cat "$out/runtime-packages")
}

door_packages() {
    extension="$1" libraries="$(mktemp)" owners="$(mktemp)"
    ldd "$extension" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' > "$libraries"
    while read -r library; do
        # dpkg knows a file by the path its package ships, which usrmerge may have moved (/lib <-> /usr/lib).
        case "$library" in /usr/*) other="${library#/usr}" ;; *) other="/usr$library" ;; esac
        found=""
        for path in "$library" "$other" "$(readlink -f "$library")"; do
            if owner="$(dpkg -S "$path" 2>/dev/null)"; then
                found="${owner%%:*}"
                break
            fi
        done
        if [ -z "$found" ]; then
            echo "install.sh: no Debian package holds $library, which $extension loads" >&2
            exit 2
        fi
        echo "$found" >> "$owners"
    done < "$libraries"
    sort -u "$owners"
    rm -f "$libraries" "$owners"
}

door_runtime() {
    door="$1" prefix="$2"
    set -- "$door"/_door*.so
    if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
        echo "install.sh: expected one built extension _door*.so in $door, found: $*" >&2
        exit 2
    fi
    extension="$1" missing=""
    for package in $(cat "$door/runtime-packages"); do
        dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q " installed$" || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        # shellcheck disable=SC2086
        apt-get install --yes --no-install-recommends $missing
        rm -rf /var/lib/apt/lists/*
    fi
    # -P: a driftline/ folder in the working directory (a checkout) must not stand in for the installed package.
    package_dir="$("$prefix/bin/python" -P -c 'import driftline.server.compiled as c, os; print(os.path.dirname(c.__file__))')"
    cp "$extension" "$package_dir/"
    "$prefix/bin/python" -P -c 'from driftline.server.compiled import _door' || {
        echo "install.sh: the compiled gRPC front end does not load in $prefix (a shared library missing?)" >&2
        exit 2
    }
}

command="${1:-}"
case "$command" in
    wheel) [ "$#" -eq 3 ] || { echo "usage: install.sh wheel SRC OUT" >&2; exit 2; }; wheel "$2" "$3" ;;
    runtime) [ "$#" -eq 4 ] || { echo "usage: install.sh runtime DIST PREFIX cpu|cuda" >&2; exit 2; }
             runtime "$2" "$3" "$4" ;;
    door) [ "$#" -eq 3 ] || { echo "usage: install.sh door SRC OUT" >&2; exit 2; }; door "$2" "$3" ;;
    door-runtime) [ "$#" -eq 3 ] || { echo "usage: install.sh door-runtime DOOR PREFIX" >&2; exit 2; }
                  door_runtime "$2" "$3" ;;
    door-packages) [ "$#" -eq 2 ] || { echo "usage: install.sh door-packages EXTENSION" >&2; exit 2; }
                   door_packages "$2" ;;
    *) echo "usage: install.sh wheel SRC OUT | runtime DIST PREFIX cpu|cuda | door SRC OUT" \
            "| door-runtime DOOR PREFIX | door-packages EXTENSION" >&2; exit 2 ;;
esac
