#!/bin/sh
# Builds (once) a stock Debian bookworm root file system, with no Node.js at all, and prints its directory:
#   build-rootfs.sh          amd64: boots systemd under systemd-nspawn (systemd and package tests)
#   build-rootfs.sh arm64    arm64, run through qemu-user-static (binfmt_misc): the arm64 package test.
#                            Its second debootstrap stage runs under qemu: minutes, once.
#
# The tree is cached OUTSIDE the clone, keyed by a hash of this script: edit the recipe and the next
# run builds a new tree (and removes the old ones). Parallel callers wait on a lock.
#
#   EC2NETD_ROOTFS_CACHE   cache folder (default /var/cache/ec2netd-test)
#   EC2NETD_DEBIAN_MIRROR  mirror (default: the one apt on this machine uses, else deb.debian.org)
set -eu

cache=${EC2NETD_ROOTFS_CACHE:-/var/cache/ec2netd-test}
arch=${1:-amd64}
case "$arch" in
  amd64) name=debian12-amd64 ;;
  arm64) name=debian12-arm64 ;;
  *) echo "build-rootfs.sh: unknown architecture $arch" >&2; exit 1 ;;
esac
key=$(sha256sum "$0" | cut -c1-12)
root="$cache/$name-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock-$name"
flock -w 1800 9

if [ -f "$root/.complete" ]; then
  echo "$root"
  exit 0
fi

mirror=${EC2NETD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

if [ "$arch" = arm64 ]; then
  debootstrap --arch=arm64 --variant=minbase --include=iproute2 bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
    tail -n 30 "$tmp/debootstrap.log" >&2
    exit 1
  }
else
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,iproute2,iptables,procps,libstdc++6 \
    bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
    tail -n 30 "$tmp/debootstrap.log" >&2
    exit 1
  }
  # First boot must not ask questions or wait on a console; the machine id is generated at boot.
  : >"$tmp/root/etc/machine-id"
  for unit in systemd-firstboot.service console-getty.service getty@tty1.service; do
    ln -sf /dev/null "$tmp/root/etc/systemd/system/$unit"
  done
fi
r="$tmp/root"

# Smaller tree: no apt lists or caches.
rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*

mv "$r" "$root"
: >"$root/.complete"
for old in "$cache/$name"-*; do
  [ "$old" = "$root" ] || rm -rf "$old"
done
echo "built $root in $(( $(date +%s) - start )) s" >&2
echo "$root"
