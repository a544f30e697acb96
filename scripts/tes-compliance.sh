#!/usr/bin/env bash
# tes-compliance.sh [--start | API_URL]: run the GA4GH TES compliance suite (elixir-cloud-aai's
# openapi-test-runner with its TES tests, v1.1.0) against a running Freight API (default
# http://127.0.0.1:5000, e.g. from `make up`; local mode, or FREIGHT_TES_COMPLIANCE_TOKEN for a
# token), or with --start against a Freight it starts for the run (`freight up` on a free port,
# its state in a temporary directory; what CI does). docs/tes.md says more; exit 0 only if every
# test file passed.
#
# The suite is not vendored here. It is installed, into .freight/tes-compliance-venv, from
#   FREIGHT_TES_COMPLIANCE_SRC   a checkout of openapi-test-runner with its tests submodule
#                                (compliance-tests-ga4gh-tes/), else
#   PyPI                         if a release named openapi-test-runner is published there.
# Without either it is skipped with a message and exit 0, so CI runs it where it can; set
# FREIGHT_TES_COMPLIANCE_REQUIRED=1 to fail instead. Extra arguments for the runner's `report`
# (such as --include-tags) go in FREIGHT_TES_COMPLIANCE_ARGS. Its tasks name public images
# (alpine, ubuntu:20.04): the runners must have them, e.g. a local image tagged so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

START=0
if [ "${1:-}" = --start ]; then
    START=1
    shift
fi
URL=${1:-${FREIGHT_TES_URL:-http://127.0.0.1:5000}}
URL=${URL%/}
VENV=$ROOT/.freight/tes-compliance-venv
OUT=$(realpath -m "${FREIGHT_TES_COMPLIANCE_OUT:-.freight/tes-compliance}")
SRC=${FREIGHT_TES_COMPLIANCE_SRC:-}

skip() {
    echo "tes-compliance: SKIPPED: $*" >&2
    [ "${FREIGHT_TES_COMPLIANCE_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
}

stop_freight() { # the Freight --start started, and its streams and queues on the broker
    [ -n "${FREIGHT_PID:-}" ] || return 0
    kill -TERM "$FREIGHT_PID" 2>/dev/null && wait "$FREIGHT_PID" 2>/dev/null
    "$ROOT/.venv/bin/python" - "$NS" <<'PY' || true
import os, sys
import pika
ns = sys.argv[1]
url = os.environ.get("FREIGHT_AMQP_URL", "amqp://guest:guest@localhost:5672/")
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
for queue in ("events", "heartbeats", "snapshots", "job_response"):
    channel.queue_delete(f"{ns}.{queue}")
channel.exchange_delete(f"{ns}.job_response")
connection.close()
PY
    rm -rf "$HOME_DIR"
    FREIGHT_PID=
}

runner() { # the runner's command: renamed from compliance-suite to openapi-test-runner upstream
    for name in openapi-test-runner compliance-suite; do
        [ -x "$VENV/bin/$name" ] && echo "$VENV/bin/$name" && return
    done
    return 1
}

if ! runner >/dev/null; then
    python3 -m venv "$VENV"
    if [ -n "$SRC" ] && [ -f "$SRC/requirements.txt" ]; then
        # Its pins of pydantic 1.9 and PyYAML 6.0 do not build on Python 3.11: their last
        # compatible releases instead, the other pins as they are.
        sed -e 's/^pydantic==.*/pydantic>=1.9.1,<2/' -e 's/^PyYAML==.*/PyYAML>=6.0,<7/' \
            "$SRC/requirements.txt" >"$VENV/requirements.txt"
        "$VENV/bin/pip" install --quiet -r "$VENV/requirements.txt"
        "$VENV/bin/pip" install --quiet --no-deps "$SRC"
    elif [ -n "$SRC" ]; then
        "$VENV/bin/pip" install --quiet "$SRC"
    elif ! "$VENV/bin/pip" install --quiet openapi-test-runner 2>/dev/null; then
        rm -rf "$VENV"
        skip "openapi-test-runner is not on PyPI and FREIGHT_TES_COMPLIANCE_SRC is unset;" \
            "clone https://github.com/elixir-cloud-aai/openapi-test-runner (with its" \
            "submodules) and point FREIGHT_TES_COMPLIANCE_SRC at it"
    fi
fi
RUNNER=$(runner)

if [ "$START" = 1 ]; then
    # Its tasks name public images; under CI, where no registry answers, the test image stands
    # in for them (never on a developer's machine: it would shadow the real ones).
    if [ "${CI:-}" = true ]; then
        for image in alpine:latest ubuntu:20.04; do
            docker image inspect "$image" >/dev/null 2>&1 ||
                docker tag "${FREIGHT_TEST_IMAGE:-freight/busybox:local}" "$image"
        done
    fi
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    URL=http://127.0.0.1:$PORT
    HOME_DIR=$(mktemp -d)
    NS=tes-compliance-$PORT
    FREIGHT_HOME=$HOME_DIR FREIGHT_NAMESPACE=$NS FREIGHT_API_BIND=127.0.0.1:$PORT \
        FREIGHT_RESPONSE_EXCHANGE=$NS.job_response FREIGHT_RESPONSE_QUEUE=$NS.job_response \
        FREIGHT_RUNNER_ID=$NS-runner FREIGHT_LOG_LEVEL=WARNING \
        FREIGHT_DEFAULT_IMAGE=${FREIGHT_TEST_IMAGE:-freight/busybox:local} \
        "$ROOT/.venv/bin/freight" up >"$HOME_DIR/freight.log" 2>&1 &
    FREIGHT_PID=$!
    trap stop_freight EXIT
    for _ in $(seq 60); do
        curl -fsS "$URL/ga4gh/tes/v1/service-info" >/dev/null 2>&1 && break
        sleep 1
    done
fi

if ! curl -fsS "$URL/ga4gh/tes/v1/service-info" >/dev/null; then
    if [ "$START" = 1 ]; then
        echo "tes-compliance: the Freight it started does not answer at $URL:" >&2
        tail -30 "$HOME_DIR/freight.log" >&2
        exit 1
    fi
    skip "no Freight API answers TES at $URL/ga4gh/tes/v1 (start one: make up)"
fi

# The runner reads its schemas, tests and configuration relative to where it runs: a scratch
# directory laid out as its checkout is, with the token (if any) in every request's headers.
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; stop_freight' EXIT
TESTS=()
if [ -n "$SRC" ] && [ -d "$SRC/compliance-tests-ga4gh-tes" ]; then
    SRC=$(realpath "$SRC")
    for entry in compliance_suite compliance-tests-ga4gh-tes tests; do
        [ -e "$SRC/$entry" ] && ln -s "$SRC/$entry" "$WORK/$entry"
    done
    mkdir -p "$WORK/web" "$WORK/tmp/testdir"
    ln -s "$SRC/compliance-tests-ga4gh-tes/models" "$WORK/tmp/testdir/models"
    cp "$SRC/compliance-tests-ga4gh-tes/api_config.yml" "$WORK/tmp/testdir/api_config.yml"
    if [ -n "${FREIGHT_TES_COMPLIANCE_TOKEN:-}" ]; then
        printf '\n  Authorization: "Bearer %s"\n' "$FREIGHT_TES_COMPLIANCE_TOKEN" \
            >>"$WORK/tmp/testdir/api_config.yml"
    fi
    TESTS=(-tp compliance-tests-ga4gh-tes/tests)
    [ -d "$SRC/tests" ] && TESTS+=(-tp tests)
fi

cd "$WORK"
# shellcheck disable=SC2086 # FREIGHT_TES_COMPLIANCE_ARGS is words on purpose
"$RUNNER" report --server "$URL/ga4gh/tes/" --version 1.1.0 "${TESTS[@]}" -o "$OUT" \
    ${FREIGHT_TES_COMPLIANCE_ARGS:-}

# The runner exits 0 whatever its tests found: its report says.
"$VENV/bin/python" - "$OUT/report.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
for phase in report["phases"]:
    print(f"tes-compliance: {phase['status']:<5} {phase['phase_name']}")
print(f"tes-compliance: cases {report['summary']}; report in {sys.argv[1]}")
sys.exit(0 if all(p["status"] == "PASS" for p in report["phases"]) else 1)
PY
