#!/usr/bin/env bash
# ensure-compose.sh: make sure a compose tool answers, `docker compose` (v2) or `docker-compose`.
# With neither, as root on Debian it installs Debian's docker-compose (1.29); compose.yaml and its
# overrides work with both. Prints the command to use. Idempotent.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

if docker compose version >/dev/null 2>&1; then echo "docker compose"; exit 0; fi
if docker-compose version >/dev/null 2>&1; then echo "docker-compose"; exit 0; fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "no compose tool: install Docker Compose (https://docs.docker.com/compose/install/)" >&2
    exit 1
fi
echo "Installing docker-compose ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q >&2
apt-get -o DPkg::Lock::Timeout=600 install -y -q docker-compose >&2
docker-compose version >/dev/null
echo "docker-compose"
