#!/usr/bin/env bash
# build-test-image.sh [TAG]: build the tiny job image the tests run (default freight/busybox:local).
# No registry needed: a rootfs from Debian's busybox-static goes into a temp dir, then `docker import`.
# Does nothing if the image already exists.
set -euo pipefail

TAG=${1:-freight/busybox:local}
BUSYBOX=/bin/busybox # where Debian's busybox-static puts its binary

bash "$(dirname "$0")/ensure-docker.sh"
docker image inspect "$TAG" >/dev/null 2>&1 && exit 0

# The dynamic `busybox` package also ships /bin/busybox, so ask dpkg which one is there.
if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    [ "$(id -u)" = 0 ] || { echo "busybox-static is missing: apt-get install busybox-static" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q busybox-static
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,root,job,tmp,proc,sys,dev,usr}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$BUSYBOX" "$root/bin/busybox"
# Relative symlinks (what `busybox --install -s` does, minus its absolute host paths).
for applet in $("$BUSYBOX" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# Merged-/usr layout so /usr/bin/env, /sbin/... also resolve.
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF

tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
    docker import \
        --change 'CMD ["sh"]' \
        --change 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' \
        --message "freight test image from busybox-static $(dpkg-query -W -f '${Version}' busybox-static)" \
        - "$TAG" >/dev/null
echo "Built $TAG"
