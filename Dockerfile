# syntax=docker/dockerfile:1
# driftline's image: `driftline serve` (Open Inference Protocol over gRPC and HTTP, Prometheus metrics).
#
#   docker build -t driftline:0.1.0 .                                  # CPU
#   docker build -t driftline:0.1.0-cuda --build-arg DEVICE=cuda .     # CUDA 13: onnxruntime-gpu, numba-cuda, CuPy
#   docker run -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/registry:/registry -e DRIFTLINE_REGISTRY=/registry driftline:0.1.0
#
# The install and the entrypoint are scripts in deploy/docker/, run here and by tests/deploy alike.
# The image holds the compiled gRPC front end (server/compiled/, built against Debian's or Ubuntu's gRPC C++ 1.51):
# The default, `--front-end auto`, serves through it; `--front-end python` keeps the grpc.aio door.
# Ports: gRPC 8001, HTTP 8000, metrics 8002 (driftline's and Triton's defaults); flags or DRIFTLINE_GRPC_PORT,
# DRIFTLINE_HTTP_PORT, DRIFTLINE_METRICS_PORT change them (a flag wins over its variable).

ARG DEVICE=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# -- builder: the project's wheel ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN sh deploy/docker/install.sh wheel /src /dist

# -- the base each device runs on -----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base-cpu

FROM ${CUDA_IMAGE} AS base-cuda
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# -- door: the compiled gRPC front end, built on the runtime's own base (its Python, its library versions) ----
FROM base-${DEVICE} AS door
WORKDIR /src
COPY proto proto
COPY server/compiled server/compiled
RUN --mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh door /src /door

# -- runtime: the wheel in a virtual environment, a non-root user, one entrypoint -----------------------
FROM base-${DEVICE} AS runtime
ARG DEVICE
RUN --mount=type=bind,from=builder,source=/dist,target=/tmp/dist \
    --mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh runtime /tmp/dist /opt/driftline ${DEVICE}
# The door's extension, and of the shared libraries it loads only those the base lacks (gRPC C++, protobuf, abseil...)
RUN --mount=type=bind,from=door,source=/door,target=/tmp/door \
    --mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh door-runtime /tmp/door /opt/driftline
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/driftline-entrypoint
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/driftline driftline
USER 10001:10001
WORKDIR /home/driftline
# What the server writes goes under /tmp: numba's compiled kernels, the served-version record (XDG_STATE_HOME,
# for an object-store registry), caches. /opt/driftline is read-only to the server's user, and the Kubernetes
# manifests run with a read-only root filesystem and an emptyDir at /tmp.
ENV PATH=/opt/driftline/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    XDG_STATE_HOME=/tmp/state \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/driftline-entrypoint"]
