#!/usr/bin/env bash
# ensure-docker.sh: make sure a Docker engine answers `docker info`, starting one if needed.
# As root on Debian/Ubuntu it installs docker.io if missing and starts dockerd without networking help
# (--bridge=none, no iptables) since job containers use --network none. Idempotent; safe to call often.
set -euo pipefail

LOG=${FREIGHT_DOCKERD_LOG:-/var/log/freight-dockerd.log}
# Optional override (e.g. vfs); by default we probe whether overlay2 can work here.
DRIVER=${FREIGHT_DOCKER_STORAGE_DRIVER:-}
DATA_ROOT=${FREIGHT_DOCKER_DATA_ROOT:-/var/lib/docker}
WAIT_S=${FREIGHT_DOCKERD_WAIT_S:-60}
export PATH="$PATH:/usr/sbin:/sbin"

docker_ok() { docker info >/dev/null 2>&1; }

cannot_fix() {
    echo "Docker engine not reachable: $1" >&2
    echo "Install Docker Engine and start it, or set DOCKER_HOST to a reachable engine." >&2
    exit 1
}

command -v docker >/dev/null 2>&1 && docker_ok && exit 0

[ "$(id -u)" = 0 ] || cannot_fix "not root, so this script will not install or start it"
command -v apt-get >/dev/null 2>&1 || cannot_fix "not an apt-based system (Debian/Ubuntu)"
case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) cannot_fix "DOCKER_HOST=$DOCKER_HOST points at a non-local engine" ;;
esac

# Serialise concurrent callers so only one of them ever starts dockerd.
exec 9>/var/lock/freight-ensure-docker.lock
flock -w $((WAIT_S + 120)) 9 || cannot_fix "timed out waiting for another ensure-docker.sh"
docker_ok && exit 0

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    echo "Installing docker.io ..."
    export DEBIAN_FRONTEND=noninteractive
    # Forbid the package from starting its own engine (default bridge 172.17/16 + iptables):
    # only the dockerd started below, with networking off, may run.
    if [ ! -e /usr/sbin/policy-rc.d ]; then # leave an existing policy alone
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Lock timeout: wait for another apt/dpkg run instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q docker.io
fi

# Can overlay2 work on this filesystem? (It fails e.g. when /var/lib/docker itself sits on overlayfs.)
overlay_works() {
    local d rc=1
    mkdir -p "$DATA_ROOT"
    d=$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX")
    mkdir "$d/l" "$d/u" "$d/w" "$d/m"
    if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
        umount "$d/m" && rc=0
    fi
    rm -rf "$d"
    return $rc
}

start_dockerd() { # $1 = storage driver
    echo "Starting dockerd (storage driver $1), log: $LOG"
    echo "=== $(date -Is) ensure-docker.sh: starting dockerd --storage-driver=$1" >>"$LOG"
    # setsid+nohup: the engine must outlive this script and the CI job's process group.
    # 9>&-: dockerd must not inherit (and so hold forever) our lock.
    setsid nohup dockerd --data-root="$DATA_ROOT" --storage-driver="$1" \
        --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
        </dev/null >>"$LOG" 2>&1 9>&- &
    DOCKERD_PID=$!
}

wait_ready() { # wait until docker answers; fail early if dockerd died
    local i
    for ((i = 0; i < WAIT_S * 2; i++)); do
        docker_ok && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# A dockerd that is still starting up (or hung) must not get a twin: wait for it instead.
if pid=$(pgrep -xo dockerd); then
    echo "dockerd (pid $pid) is running but not answering yet; waiting up to ${WAIT_S}s ..."
    DOCKERD_PID=$pid
    wait_ready && exit 0
    cannot_fix "dockerd pid $pid does not answer; see $LOG"
fi

mkdir -p "$(dirname "$LOG")"
if [ -z "$DRIVER" ]; then
    if overlay_works; then DRIVER=overlay2; else DRIVER=vfs; fi
fi
start_dockerd "$DRIVER"
if ! wait_ready; then
    if [ "$DRIVER" != vfs ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
        echo "dockerd exited with $DRIVER (see $LOG); retrying with vfs" >&2
        start_dockerd vfs
        wait_ready || cannot_fix "dockerd did not come up with vfs either; see $LOG"
    else
        cannot_fix "dockerd (pid $DOCKERD_PID) did not answer within ${WAIT_S}s; see $LOG"
    fi
fi
echo "Docker engine is up (pid $DOCKERD_PID, storage driver $(docker info -f '{{.Driver}}')); log: $LOG"
