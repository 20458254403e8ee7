// The entry scripts/bundle.sh bundles into dist/ec2netd.js, the file bin/ec2netd.js runs: one file instead of ~60
// of ours, each resolved, read and compiled on its own (docs/performance.md, "Start"). Also
// exported: the systemd and log modules, for code that must use exactly what the daemon runs (the systemd test's
// probe unit, which requires them from the installed package).
export { main } from './cli';
export { createLogger } from './log';
export { createNotifier } from './systemd/notify';
