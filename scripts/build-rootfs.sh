#!/bin/sh
# Builds (once) a Debian bookworm root file system that boots systemd under systemd-nspawn, for the
# systemd end-to-end test (docs/testbed.md §3 of the shared docs). Prints the directory on stdout.
#
# The tree is cached OUTSIDE the clone, keyed by a hash of this script: edit the recipe and the next
# run builds a new tree (and removes the old ones). Parallel callers wait on a lock.
#
#   EC2NETD_ROOTFS_CACHE   cache folder (default /var/cache/ec2netd-test)
#   EC2NETD_DEBIAN_MIRROR  mirror (default: the one apt on this machine uses, else deb.debian.org)
set -eu

cache=${EC2NETD_ROOTFS_CACHE:-/var/cache/ec2netd-test}
key=$(sha256sum "$0" | cut -c1-12)
root="$cache/rootfs-bookworm-$key"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 600 9

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

debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,iproute2,iptables,procps,libstdc++6 \
  bookworm "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
  tail -n 30 "$tmp/debootstrap.log" >&2
  exit 1
}
r="$tmp/root"

# First boot must not ask questions or wait on a console; the machine id is generated at boot.
: >"$r/etc/machine-id"
for unit in systemd-firstboot.service console-getty.service getty@tty1.service; do
  ln -sf /dev/null "$r/etc/systemd/system/$unit"
done

# Node.js is not installed in the tree: the test binds the host's /usr/bin/node (same Debian release,
# same glibc and libstdc++) read-only into the container. This empty package declares that, so the
# ec2netd .deb (Depends: nodejs (>= 20)) installs with plain `dpkg -i`, no --force-depends.
pkg="$tmp/host-node"
mkdir -p "$pkg/DEBIAN"
cat >"$pkg/DEBIAN/control" <<'EOF'
Package: ec2netd-test-host-node
Version: 1.0
Architecture: all
Maintainer: ec2netd tests <root@localhost>
Provides: nodejs (= 20.0.0)
Description: Node.js bind-mounted from the test host (test containers only)
EOF
dpkg-deb --build --root-owner-group "$pkg" "$r/tmp/host-node.deb" >/dev/null
chroot "$r" dpkg -i /tmp/host-node.deb >/dev/null
rm -f "$r/tmp/host-node.deb"

# Smaller tree: no apt lists or caches.
rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*

mv "$r" "$root"
: >"$root/.complete"
for old in "$cache"/rootfs-bookworm-*; do
  [ "$old" = "$root" ] || rm -rf "$old"
done
echo "built $root in $(( $(date +%s) - start )) s" >&2
echo "$root"
