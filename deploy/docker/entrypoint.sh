#!/bin/sh
# The image's entrypoint (the Dockerfile's ENTRYPOINT; tests/deploy runs this same file).
#
# No arguments, or arguments that start with a flag: `driftline serve` with them. KServe starts a runtime
# this way (--model_name=NAME --model_dir=/mnt/models --http_port=8080 --grpc_port=8081), and so does a
# Deployment that configures by DRIFTLINE_* variables alone. A first argument that is a word runs that
# driftline command instead (the retrain CronJob runs `retrain NAME ... --promote` in this same image).
set -eu

# In a container the ports must be reachable from outside the container's own loopback. Admin calls
# (swap, load, unload) stay refused off loopback unless DRIFTLINE_ADMIN_TOKEN is set.
export DRIFTLINE_HOST="${DRIFTLINE_HOST:-0.0.0.0}"

case "${1:-}" in
    "" | -*) set -- serve "$@" ;;
esac
exec driftline "$@"
