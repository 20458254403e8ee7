'use strict';
// The JS entry; bin/ec2netd starts it on the bundled Node.js runtime.
require('../dist/src/cli.js').main(process.argv.slice(2));
