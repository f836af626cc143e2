#!/usr/bin/env bash
# The prepared device check (issue 17), one command from the repository root:
#
#     bash benchmarks/gpu_check.sh
#
# 1. uses .venv when it exists, else creates it and installs the project (plus pytest) from the package index;
# 2. looks for a GPU (nvidia-smi, CUDA_VISIBLE_DEVICES); with one, installs onnxruntime-gpu[cuda,cudnn],
#    numba-cuda[cu12] and cupy-cuda12x, prints the device and checks that numba reaches it;
# 3. runs the CUDA kernel tests (tests/kernels -k cuda): on the device, not the simulator, when there is one;
#    in numba's simulator (NUMBA_ENABLE_CUDASIM=1) when there is none;
# 4. runs benchmarks/gpu_bench.py (TreeSHAP rows/s at 1, 1k, 100k rows; a drift update of 1M rows x 12;
#    infer/s at c=32, batch-1 and 64-row requests, through `driftline serve --device cuda` and `--device cpu`),
#    every GPU figure beside its CPU baseline from the same run; without a GPU, the CPU side at small sizes;
# 5. writes the results file: $OUT/gpu_results.md when $OUT is set, else benchmarks/out/gpu_results.md (git-ignored,
#    with the logs of each stage).
#
# Every stage has a timeout inside a budget of DRIFTLINE_GPU_CHECK_BUDGET_S seconds (default 450: the check
# must end within 8 minutes on one GPU). Exit status 0 when the kernel tests passed and the results file was
# written (with or without a GPU), 1 otherwise.
#
# DRIFTLINE_GPU_CHECK_QUICK=1: install nothing, tiny sizes, one-second loads (tests/test_gpu_check.py).
# DRIFTLINE_GPU_CHECK_TESTS: the pytest selection of kernel tests (default: tests/kernels -k cuda).
# CUDA_VISIBLE_DEVICES="" or -1: behave as if there were no GPU.
set -u
cd "$(dirname "$0")/.." || exit 1

BUDGET=${DRIFTLINE_GPU_CHECK_BUDGET_S:-450}
QUICK=${DRIFTLINE_GPU_CHECK_QUICK:-0}
PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
if [ -n "${OUT:-}" ]; then RESULTS=$OUT/gpu_results.md; LOGS=$OUT; else RESULTS=benchmarks/out/gpu_results.md; LOGS=benchmarks/out; fi
mkdir -p "$LOGS" "$(dirname "$RESULTS")"
TESTS=${DRIFTLINE_GPU_CHECK_TESTS:-tests/kernels -k cuda}
NOTES=()
PIP_OPTS="--quiet --disable-pip-version-check --timeout 30 --retries 2"  # fail fast where the index is unreachable
STATUS=0

say() { echo "gpu_check [$(printf '%3d' "$SECONDS") s]: $*"; }
# seconds a stage may take: at most $1, and never past the budget (keeping $2 seconds for what follows)
stage_timeout() {
    local left=$((BUDGET - SECONDS - $2))
    [ "$left" -lt 10 ] && left=10
    [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

say "budget ${BUDGET} s; results to $RESULTS"

# -- 1. the virtual environment ----------------------------------------------------------------
if [ -x "$PY" ] && "$PY" -c "import driftline" 2>/dev/null; then
    say "reusing $VENV ($("$PY" --version 2>&1))"
elif [ "$QUICK" = 1 ]; then
    say "quick mode installs nothing, and $VENV has no driftline: run 'make setup' first"
    exit 1
else
    # --system-site-packages: what the machine already has (a CUDA-enabled numba, CuPy) stays usable
    say "creating $VENV and installing the project (pip, from the package index)"
    "$PYTHON" -m venv --system-site-packages "$VENV" || exit 1
    # shellcheck disable=SC2086  # $PIP_OPTS is a list of options
    if ! timeout "$(stage_timeout 240 200)" "$PY" -m pip install $PIP_OPTS -e . pytest \
            > "$LOGS/gpu_check_install.log" 2>&1; then
        say "installing the project with its dependencies failed; trying without them (no package index?)"
        tail -n 5 "$LOGS/gpu_check_install.log"
        if ! "$PY" -m pip install $PIP_OPTS --no-deps --no-build-isolation -e . >> "$LOGS/gpu_check_install.log" 2>&1 \
                || ! "$PY" -c "import driftline.kernels.treeshap, pytest" >> "$LOGS/gpu_check_install.log" 2>&1; then
            say "cannot install the project here (log: $LOGS/gpu_check_install.log):"
            tail -n 10 "$LOGS/gpu_check_install.log"
            exit 1
        fi
    fi
fi

# -- 2. is there a GPU? ---------------------------------------------------------------------------
GPU_NAME=""
case "${CUDA_VISIBLE_DEVICES-unset}" in
    "" | "-1" | none | NoDevFiles) say "CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES}' hides every GPU" ;;
    *)
        if command -v nvidia-smi > /dev/null 2>&1; then
            GPU_NAME=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
        elif compgen -G "/dev/nvidia[0-9]*" > /dev/null; then
            GPU_NAME="a GPU at $(compgen -G '/dev/nvidia[0-9]*' | head -n 1) (no nvidia-smi to name it)"
        fi ;;
esac

if [ -n "$GPU_NAME" ]; then
    say "GPU found: $GPU_NAME"
    NOTES+=("--note" "nvidia-smi: $GPU_NAME")
    if [ "$QUICK" != 1 ]; then
        say "installing onnxruntime-gpu[cuda,cudnn], numba-cuda[cu12], cupy-cuda12x"
        # shellcheck disable=SC2086
        if timeout "$(stage_timeout 200 200)" "$PY" -m pip install $PIP_OPTS \
                "onnxruntime-gpu[cuda,cudnn]>=1.20" "numba-cuda[cu12]>=0.15" "cupy-cuda12x>=13" \
                > "$LOGS/gpu_check_gpu_install.log" 2>&1; then
            NOTES+=("--note" "installed: $("$PY" -m pip list 2>/dev/null | grep -iE '^(onnxruntime-gpu|numba-cuda|cupy-cuda12x|numba) ' | tr -s ' ' | tr '\n' ';')")
        else
            say "installing the GPU packages failed (log: $LOGS/gpu_check_gpu_install.log); going on with what is there"
            tail -n 5 "$LOGS/gpu_check_gpu_install.log"
            NOTES+=("--note" "installing the GPU packages failed; ran with what was installed")
        fi
    fi
    # the CUDA libraries pip put under site-packages/nvidia/*/lib, for onnxruntime's CUDA provider
    NVLIBS=$("$PY" -c "import glob, site; print(':'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/*/lib'))))" 2>/dev/null)
    [ -n "$NVLIBS" ] && export LD_LIBRARY_PATH="$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    unset NUMBA_ENABLE_CUDASIM
    DEVICE=$(timeout 120 "$PY" -c "
from numba import cuda
assert cuda.is_available(), 'numba.cuda.is_available() is False'
from driftline.kernels.launch import device_limits
d = device_limits()
print(f'{d.name}: {d.multiprocessors} multiprocessors, {d.max_threads_per_block} threads a block, {d.shared_bytes_per_block // 1024} KiB shared a block')
" 2>"$LOGS/gpu_check_numba.log")
    if [ -z "$DEVICE" ]; then
        say "numba cannot reach the GPU (log: $LOGS/gpu_check_numba.log):"
        tail -n 5 "$LOGS/gpu_check_numba.log"
        NOTES+=("--note" "numba.cuda could not reach the GPU: $(tail -n 1 "$LOGS/gpu_check_numba.log")")
        STATUS=1
    else
        say "numba sees $DEVICE"
        NOTES+=("--note" "numba.cuda: $DEVICE")
    fi
    "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 | sed 's/^/gpu_check: /'
else
    say "no GPU found: running the CUDA kernels in numba's simulator and the CPU side of the benchmark at small sizes"
    NOTES+=("--note" "no GPU found: the CUDA kernel tests ran in numba's simulator (NUMBA_ENABLE_CUDASIM=1); no GPU figures")
fi

# -- 3. the CUDA kernel tests ---------------------------------------------------------------------
TEST_LOG=$LOGS/gpu_check_tests.log
if [ -n "$GPU_NAME" ]; then
    say "CUDA kernel tests on the device: pytest -q $TESTS"
    # shellcheck disable=SC2086  # $TESTS is a list of pytest arguments
    timeout "$(stage_timeout 180 150)" env -u NUMBA_ENABLE_CUDASIM "$PY" -m pytest -q -p no:cacheprovider -rs $TESTS > "$TEST_LOG" 2>&1
    TESTS_RC=$?
    WHERE="on the device"
else
    say "CUDA kernel tests in the simulator: NUMBA_ENABLE_CUDASIM=1 pytest -q $TESTS"
    # shellcheck disable=SC2086
    NUMBA_ENABLE_CUDASIM=1 timeout "$(stage_timeout 240 90)" "$PY" -m pytest -q -p no:cacheprovider -rs $TESTS > "$TEST_LOG" 2>&1
    TESTS_RC=$?
    WHERE="in numba's simulator"
fi
SUMMARY=$(tail -n 1 "$TEST_LOG")
say "kernel tests $WHERE: $SUMMARY"
if [ "$TESTS_RC" -ne 0 ] || ! grep -q "passed" <<< "$SUMMARY"; then  # all skipped: numba saw no device
    tail -n 30 "$TEST_LOG"
    STATUS=1
fi
NOTES+=("--note" "CUDA kernel tests $WHERE (pytest -q $TESTS): $SUMMARY")

# -- 4. the benchmark -----------------------------------------------------------------------------
BENCH_ARGS=()
if [ -z "$GPU_NAME" ] || [ "$QUICK" = 1 ]; then BENCH_ARGS+=(--quick); fi
say "benchmark: python benchmarks/gpu_bench.py ${BENCH_ARGS[*]:-}"
NOTES+=("--note" "check: bash benchmarks/gpu_check.sh$( [ "$QUICK" = 1 ] && echo " (DRIFTLINE_GPU_CHECK_QUICK=1)"), budget ${BUDGET} s")
if ! timeout "$(stage_timeout 300 5)" env -u NUMBA_ENABLE_CUDASIM "$PY" benchmarks/gpu_bench.py "${BENCH_ARGS[@]}" \
        --out "$RESULTS" "${NOTES[@]}" > "$LOGS/gpu_check_bench.log" 2>&1; then
    say "the benchmark failed or ran out of time (log: $LOGS/gpu_check_bench.log):"
    tail -n 30 "$LOGS/gpu_check_bench.log"
    STATUS=1
else
    grep -vE "^(treeshap|drift|serve)" "$LOGS/gpu_check_bench.log" | sed -n '/^# GPU check results/,$p'
fi

say "done in $SECONDS s, exit status $STATUS"
exit "$STATUS"
