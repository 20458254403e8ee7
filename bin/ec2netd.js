'use strict';
// The JS entry; bin/ec2netd starts it on the bundled Node.js runtime. dist/ec2netd.js is src/ in one file
// (scripts/bundle.sh, run by `npm run build`).
require('../dist/ec2netd.js').main(process.argv.slice(2));
