# The two commands a new machine needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench proto clean compiled

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) server/compiled/build.py --install-libraries  # optional: one line and on without the gRPC C++ libraries
	touch $(STAMP)

# The compiled gRPC front end alone (server/compiled/), e.g. after changing its sources.
compiled: setup
	$(PY) server/compiled/build.py --strict

demo: setup
	$(VENV)/bin/driftline demo

# The CUDA twins of the kernels run in numba's simulator in a second pass: the simulator must be
# switched on before numba is first imported, so it cannot share a process with the other tests.
# Where the compiled gRPC front end is built, `--front-end auto` (what the first pass serves on) is that door, and
# the protocol tests run a third time on the Python door; elsewhere the first pass is the Python door's.
test: setup
	$(PY) -m pytest
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q tests/kernels -k cuda
	@if $(PY) -c "import driftline.server.compiled._door" 2>/dev/null; then \
		DRIFTLINE_TEST_FRONT_END=python $(PY) -m pytest -q $(DOOR_TESTS); \
	else echo "compiled gRPC front end not built: every test ran on the Python door"; fi

# The protocol and stock-client tests, run on both doors (any test file runs on one door with
# DRIFTLINE_TEST_FRONT_END=python|compiled).
DOOR_TESTS := tests/test_triton_examples.py tests/test_client.py tests/server/test_health_reflection.py \
	tests/server/test_swap.py tests/server/test_deadlines_and_queue.py tests/server/test_streams_bounded.py \
	tests/server/test_fuzz_requests.py tests/server/test_graceful_stop.py tests/server/test_admin_guard.py \
	tests/server/test_error_bounds.py tests/test_bad_input.py tests/server/test_serving_under_load.py \
	tests/server/test_tracing.py tests/server/test_metrics.py tests/test_validation_e2e.py tests/test_perf_analyzer.py

bench: setup
	$(PY) benchmarks/load.py

# Regenerate proto/*_pb2*.py with the pinned generator (see proto/generate.py).
proto:
	$(PYTHON) -m venv .venv-proto
	.venv-proto/bin/pip install --quiet 'grpcio-tools==1.75.1'
	.venv-proto/bin/python proto/generate.py

clean:
	rm -rf $(VENV) .venv-proto .demo build *.egg-info server/compiled/build server/compiled/build-asan server/compiled/_door*.so
