// Preloaded by runtime.test.ts (NODE_OPTIONS=--require): reports which node runs the launched program.
process.stdout.write(`runtime ${process.execPath} ${process.version}\n`);
