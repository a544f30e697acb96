#!/usr/bin/env bash
# build-images.sh: build every image compose.yaml needs from Debian's packages (`make images`), so
# the compose deployment runs on a host that reaches no image registry:
#
#   freight/debian:SUITE      a minimal Debian (debootstrap --variant=minbase), by `docker import`
#   freight/python:SUITE      Debian's python3 on it: the Dockerfile's PYTHON_IMAGE
#   freight/python-build:SUITE  that and the wheels of requirements.lock: its BUILD_IMAGE
#   freight:local             Freight's own image, from the Dockerfile   (compose: FREIGHT_IMAGE)
#   freight/rabbitmq:local    Debian's rabbitmq-server                   (compose: RABBITMQ_IMAGE)
#   freight/postgres:local    Debian's postgresql                        (compose: POSTGRES_IMAGE)
#   freight/busybox:local     the jobs' image (build-test-image.sh)      (FREIGHT_DEFAULT_IMAGE)
#
# SUITE is this host's Debian release. A host that pulls images needs none of this: compose.yaml
# defaults to the official images. Nothing is built twice: the base is kept while an image made
# from the same inputs exists, and the rest are `docker build`s, whose cache skips every step
# whose inputs did not change (a code change rebuilds only Freight's last layers).
#
# The builds that install Debian packages get the host's network (--network host: this engine
# runs without a bridge) and fetch them from the mirror the host uses. Python packages come from
# the host's pip (its index, proxy and certificates), as wheels in a cache beside the repository.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"

. /etc/os-release
SUITE=${FREIGHT_DEBIAN_SUITE:-${VERSION_CODENAME:?not a Debian host: build the images elsewhere or pull the official ones}}
MIRROR=${FREIGHT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=freight/debian:$SUITE
PYTHON=freight/python:$SUITE
PYTHON_BUILD=freight/python-build:$SUITE
PIP=${PIP:-.venv/bin/pip}
WHEELS=.freight/images/wheels

bash scripts/ensure-docker.sh
bash scripts/ensure-compose.sh >/dev/null

build() { # $1 tag, $2 dockerfile, $3 context, then --build-arg ...
    local tag=$1 dockerfile=$2 context=$3
    shift 3
    echo "--- $tag"
    docker build --network host --pull=false --build-arg "BASE=$BASE" "$@" \
        -f "$dockerfile" -t "$tag" "$context"
}

# -- the Debian base: debootstrap once per suite, mirror and set-up script ------------------------
inputs=$(cat scripts/images/debian-rootfs.sh; echo "$SUITE $MIRROR")
key=$(printf '%s' "$inputs" | sha256sum | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "freight.inputs"}}' "$BASE" 2>/dev/null)" != "$key" ]; then
    echo "--- $BASE (debootstrap $SUITE from $MIRROR)"
    bash scripts/images/debian-rootfs.sh "$SUITE" "$MIRROR" |
        docker import --change "LABEL freight.inputs=$key" --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$BASE"
fi

build "$PYTHON" scripts/images/python.Dockerfile scripts/images

# -- Freight: the wheels of its dependencies and of its build backend (pyproject's build-system),
# fetched again only when those change ------------------------------------------------------------
backend=$(python3 -c 'import sys, tomllib; print(*tomllib.load(sys.stdin.buffer)["build-system"]["requires"], sep="\n")' <pyproject.toml)
wanted=$( (cat requirements.lock; echo "$backend") | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/.wanted" 2>/dev/null)" != "$wanted" ]; then
    echo "--- wheels of requirements.lock and the build backend ($PIP)"
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    "$PIP" wheel --quiet --no-deps --requirement requirements.lock --wheel-dir "$WHEELS"
    echo "$backend" | xargs "$PIP" wheel --quiet --wheel-dir "$WHEELS"
    echo "$wanted" >"$WHEELS/.wanted"
fi
build "$PYTHON_BUILD" scripts/images/python-build.Dockerfile "$WHEELS" --build-arg "PYTHON_IMAGE=$PYTHON"
build freight:local Dockerfile . --build-arg "PYTHON_IMAGE=$PYTHON" --build-arg "BUILD_IMAGE=$PYTHON_BUILD"
build freight/rabbitmq:local scripts/images/rabbitmq.Dockerfile scripts/images
build freight/postgres:local scripts/images/postgres.Dockerfile scripts/images
bash scripts/build-test-image.sh freight/busybox:local

cat <<DONE
Built. Run compose with them:
  FREIGHT_IMAGE=freight:local RABBITMQ_IMAGE=freight/rabbitmq:local POSTGRES_IMAGE=freight/postgres:local \\
  FREIGHT_DEFAULT_IMAGE=freight/busybox:local docker compose up -d
DONE
