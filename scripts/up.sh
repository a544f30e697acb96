#!/usr/bin/env bash
# up.sh: run every Freight service locally on its embedded defaults (`make up`).
# Makes sure a Docker engine and RabbitMQ answer (installing and starting them as root on
# Debian), picks a job image that exists here, then runs `freight up` (Ctrl-C stops everything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-docker.sh

bash scripts/ensure-rabbitmq.sh

# Jobs need an image. A job that names one has it pulled on first use; the default must exist
# here already, else a small busybox image is built from this machine's packages (no registry
# traffic at start-up). Choose another with FREIGHT_DEFAULT_IMAGE=python:3.12 make up.
if [ -z "${FREIGHT_DEFAULT_IMAGE:-}" ]; then
    bash scripts/build-test-image.sh freight/busybox:local >/dev/null
    export FREIGHT_DEFAULT_IMAGE=freight/busybox:local
fi
echo "up: jobs run in $FREIGHT_DEFAULT_IMAGE unless they ask for another image"

export FREIGHT_HOME=${FREIGHT_HOME:-$PWD/.freight}
echo "up: state in $FREIGHT_HOME; API on http://${FREIGHT_API_BIND:-127.0.0.1:5000}"
exec .venv/bin/freight up
