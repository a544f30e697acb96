#!/usr/bin/env bash
# debian-rootfs.sh SUITE MIRROR: a minimal Debian root file system (debootstrap --variant=minbase),
# set up as Debian's official container images are, written to stdout as a tar for `docker import`.
set -euo pipefail
SUITE=$1
MIRROR=$2
export PATH="$PATH:/usr/sbin:/sbin"

if ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap >&2
fi

root=$(mktemp -d /var/tmp/freight-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2

# A container has no init: packages must not start services as they install.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/apt.conf.d/90freight" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat >"$root/etc/apt/sources.list" <<LIST
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
LIST
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log

tar --numeric-owner -C "$root" -c .
