#!/usr/bin/env bash
# tes-compliance.sh [API_URL]: run the GA4GH TES compliance suite (elixir-cloud-aai's
# openapi-test-runner, TES v1.1.0) against a running Freight API (default http://127.0.0.1:5000,
# e.g. from `make up`; local mode, as the runner sends no token). docs/tes.md says more.
#
# The suite is not vendored here. It is installed, into .freight/tes-compliance-venv, from
#   FREIGHT_TES_COMPLIANCE_SRC   a checkout (or sdist, or pip URL) of openapi-test-runner, else
#   PyPI                         if a release named openapi-test-runner is published there.
# Without either it is skipped with a message and exit 0, so CI runs it where it can; set
# FREIGHT_TES_COMPLIANCE_REQUIRED=1 to fail instead. Extra arguments for the runner's `report`
# (such as --include-tags) go in FREIGHT_TES_COMPLIANCE_ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

URL=${1:-${FREIGHT_TES_URL:-http://127.0.0.1:5000}}
URL=${URL%/}
VENV=.freight/tes-compliance-venv
RUNNER=$VENV/bin/openapi-test-runner
OUT=${FREIGHT_TES_COMPLIANCE_OUT:-.freight/tes-compliance}

skip() {
    echo "tes-compliance: SKIPPED: $*" >&2
    [ "${FREIGHT_TES_COMPLIANCE_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
}

if [ ! -x "$RUNNER" ]; then
    python3 -m venv "$VENV"
    if [ -n "${FREIGHT_TES_COMPLIANCE_SRC:-}" ]; then
        "$VENV/bin/pip" install --quiet "$FREIGHT_TES_COMPLIANCE_SRC"
    elif ! "$VENV/bin/pip" install --quiet openapi-test-runner 2>/dev/null; then
        rm -rf "$VENV"
        skip "openapi-test-runner is not on PyPI and FREIGHT_TES_COMPLIANCE_SRC is unset;" \
            "clone https://github.com/elixir-cloud-aai/openapi-test-runner and point" \
            "FREIGHT_TES_COMPLIANCE_SRC at it"
    fi
fi

if ! curl -fsS "$URL/ga4gh/tes/v1/service-info" >/dev/null; then
    skip "no Freight API answers TES at $URL/ga4gh/tes/v1 (start one: make up)"
fi

mkdir -p "$OUT"
# shellcheck disable=SC2086 # FREIGHT_TES_COMPLIANCE_ARGS is words on purpose
"$RUNNER" report --server "$URL/ga4gh/tes/" --version 1.1.0 --output_path "$OUT" \
    ${FREIGHT_TES_COMPLIANCE_ARGS:-}
echo "tes-compliance: report in $OUT"
