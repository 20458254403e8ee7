#!/bin/sh
# dist/ec2netd.js: tsc's output of src/ (dist/src, from `npm run build`) bundled by esbuild into one CommonJS file,
# the file bin/ec2netd.js runs and the packages install. The native addons' packages (netlink, unix-dgram) stay
# outside it: they find their binaries relative to their own directory.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
exec "$repo/node_modules/.bin/esbuild" "$repo/dist/src/bundle.js" --bundle --platform=node --target=node24 --format=cjs \
  --external:netlink --external:unix-dgram --log-level=warning --outfile="$repo/dist/ec2netd.js"
