#!/usr/bin/env bash
# ensure-test-tools.sh: what some tests drive besides Docker (`make test` runs it).
#   faketime  the fault suite runs one runner with its clock a minute ahead (libfaketime)
#   chromium  tests/e2e/test_dashboard.py drives the dashboard in headless Chromium
# As root on Debian, installs what is missing; elsewhere it says what to install, and those
# checks are reported as not run (the fault suite's row) or skipped (the browser test).
set -euo pipefail

missing=()
command -v faketime >/dev/null || missing+=(faketime)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-tools: ${missing[*]} missing (apt-get install ${missing[*]}); those tests are skipped" >&2
    exit 0
fi
apt() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
export DEBIAN_FRONTEND=noninteractive
apt install -y -q "${missing[@]}" >&2 || { apt update -q >&2 && apt install -y -q "${missing[@]}" >&2; } ||
    echo "ensure-test-tools: could not install ${missing[*]}; those tests are skipped" >&2
