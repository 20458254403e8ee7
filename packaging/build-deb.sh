#!/bin/sh
# Builds dist/ec2netd_<version>_<arch>.deb from this checkout (`npm run package`).
#
# The package holds compiled JavaScript and the production node_modules, which include native addons
# (netlink's prebuilt binary, unix-dgram built by node-gyp at `npm ci`): it is architecture-specific,
# built for the architecture of this machine. Node.js itself comes from the `nodejs` package (Debian's,
# or NodeSource's, which uses the same name) and must be 20 or newer.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
umask 022

version=$(node -p 'require("./package.json").version')
arch=$(dpkg --print-architecture)
case "$arch" in
  amd64) nodearch=x64 ;;
  arm64) nodearch=arm64 ;;
  *) echo "build-deb: unsupported architecture $arch" >&2; exit 1 ;;
esac
out="$repo/dist/ec2netd_${version}_${arch}.deb"

stage=$(mktemp -d /tmp/ec2netd-deb.XXXXXX)
trap 'rm -rf "$stage"' EXIT
# A private tsc output of src/ only (what the package ships): no stale files from the shared dist/,
# no interference with its users, no dependency on sim/ or bench/.
npx tsc -p packaging/tsconfig.json --outDir "$stage/build"
lib="$stage/usr/lib/ec2netd"
mkdir -p "$lib/bin" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/lib/systemd/networkd.conf.d" \
  "$stage/etc/ec2netd" "$stage/usr/share/doc/ec2netd" "$stage/DEBIAN"

# The program: compiled src/ only (not sim/ or bench/), the bin script and package.json.
mkdir -p "$lib/dist"
mv "$stage/build/src" "$lib/dist/src"
rm -rf "$stage/build"
cp bin/ec2netd "$lib/bin/ec2netd"
cp package.json "$lib/package.json"

# Production dependencies, as installed by `npm ci` here (same lockfile, offline): every package
# directory npm lists without dev dependencies, without nested node_modules (listed on their own)
# and without build intermediates.
npm ls --omit=dev --all --parseable | while read -r dir; do
  [ "$dir" = "$repo" ] && continue
  rel=${dir#"$repo"/}
  mkdir -p "$lib/$rel"
  (cd "$dir" && tar -cf - --exclude=./node_modules --exclude=./build/Release/obj.target \
    --exclude=./build/Release/.deps --exclude=./build/Release/.forge-meta .) | tar -xf - -C "$lib/$rel"
done
# netlink ships prebuilt binaries for several architectures: keep this one's.
for d in "$lib"/node_modules/netlink/prebuilds/*; do
  [ "$(basename "$d")" = "linux-$nodearch" ] || rm -rf "$d"
done

# /usr/bin/ec2netd: exec, so that node itself is the service's main PID (Type=notify, NotifyAccess=main).
cat >"$stage/usr/bin/ec2netd" <<'WRAPPER'
#!/bin/sh
exec /usr/bin/node /usr/lib/ec2netd/bin/ec2netd "$@"
WRAPPER
chmod 0755 "$stage/usr/bin/ec2netd" "$lib/bin/ec2netd"

cp deploy/ec2netd.service "$stage/lib/systemd/system/ec2netd.service"
cp deploy/networkd-ec2netd.conf "$stage/usr/lib/systemd/networkd.conf.d/ec2netd.conf"
cp deploy/config.json "$stage/etc/ec2netd/config.json"
for doc in docs/operations.md docs/architecture.md; do
  [ -f "$doc" ] && cp "$doc" "$stage/usr/share/doc/ec2netd/"
done
cat >"$stage/usr/share/doc/ec2netd/copyright" <<'COPYRIGHT'
ec2netd is licensed under the MIT license. The bundled node_modules keep their own licenses in
/usr/lib/ec2netd/node_modules/*/LICENSE*.
COPYRIGHT

installed=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: ec2netd
Version: $version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-ec2netd maintainers} <${DEBEMAIL:-ec2netd@localhost}>
Installed-Size: $installed
Depends: nodejs (>= 20), iproute2, iptables
Section: net
Priority: optional
Homepage: https://github.com/ec2netd/ec2netd
Description: multi-ENI policy routing daemon for EC2
 Keeps per-ENI routing tables and source and fwmark rules in step with the instance's
 network interfaces (IMDSv2 and rtnetlink events), so replies leave through the ENI
 they came in on, including for Docker containers.
CONTROL
echo /etc/ec2netd/config.json >"$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/$script" "$stage/DEBIAN/$script"
done

mkdir -p "$(dirname "$out")"
dpkg-deb --build --root-owner-group "$stage" "$out" >/dev/null
echo "$out"
