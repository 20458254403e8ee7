'use strict';
// The JS entry; bin/ec2netd starts it on the bundled Node.js runtime. dist/ec2netd.js is src/ in one file
// (scripts/bundle.sh, run by `npm run build`).
// Under systemd the unit's CacheDirectory= (CACHE_DIRECTORY) keeps V8's compiled code across starts (Node's compile
// cache; docs/performance.md, "Start"). Elsewhere (a checkout, a command run by hand) nothing is written.
const cache = (process.env.CACHE_DIRECTORY ?? '').split(':')[0];
if (cache !== '') require('node:module').enableCompileCache(cache);
require('../dist/ec2netd.js').main(process.argv.slice(2));
