// Runs inside a namespace (runInNs self-test): prints its arguments and the interface names it sees.
import { networkInterfaces } from 'node:os';

process.stdout.write(JSON.stringify({ args: process.argv.slice(2), interfaces: Object.keys(networkInterfaces()).sort() }) + '\n');
