# The two commands a new machine needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/driftline demo

# The CUDA twins of the kernels run in numba's simulator in a second pass: the simulator must be
# switched on before numba is first imported, so it cannot share a process with the other tests.
test: setup
	$(PY) -m pytest
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q tests/kernels -k cuda

bench: setup
	$(PY) benchmarks/load.py

# Regenerate proto/*_pb2*.py with the pinned generator (see proto/generate.py).
proto:
	$(PYTHON) -m venv .venv-proto
	.venv-proto/bin/pip install --quiet 'grpcio-tools==1.75.1'
	.venv-proto/bin/python proto/generate.py

clean:
	rm -rf $(VENV) .venv-proto .demo build *.egg-info
