// A bug (an uncaught exception, an unhandled rejection) in a real process: logged at error with its stack, exit 70.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { journalFields } from '../../src/systemd/journal';

const ROOT = path.resolve(__dirname, '..', '..');

/** Runs `body` in a fresh node with the crash handlers installed on a JSON logger writing to stdout. */
function crashWith(body: string): { code: number | null; entry: Record<string, unknown>; stderr: string } {
  const script = `
    const { installCrashHandlers } = require('./src/crash.ts');
    const { createLogger } = require('./src/log.ts');
    installCrashHandlers(createLogger('info'));
    setInterval(() => undefined, 1000); // a daemon's loop: only the handler ends this process
    ${body}`;
  const r = spawnSync(process.execPath, ['-r', 'tsx/cjs', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000, env: { ...process.env, INVOCATION_ID: '' } });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{')) ?? '{}';
  return { code: r.status, entry: JSON.parse(line) as Record<string, unknown>, stderr: r.stderr };
}

describe('crash handlers', () => {
  it('an uncaught exception: one error entry (journal priority 3) with the stack, exit 70', () => {
    const r = crashWith(`setTimeout(() => { throw new Error('boom in a timer'); }, 1);`);
    expect(r.code).toBe(70);
    expect(r.entry).toMatchObject({ level: 50, action: 'crash', msg: 'uncaught exception: boom in a timer; exiting (70) to be restarted' });
    expect((r.entry.err as { stack?: string }).stack).toContain('boom in a timer');
    expect(journalFields(r.entry)).toContainEqual(['PRIORITY', '3']);
    expect(r.stderr).toContain('ec2netd: uncaught exception: boom in a timer');
  });

  it('an unhandled rejection (of a non-Error too): exit 70, logged', () => {
    const r = crashWith(`void Promise.reject('nobody awaited me');`);
    expect(r.code).toBe(70);
    expect(r.entry).toMatchObject({ level: 50, action: 'crash', msg: 'unhandled rejection: nobody awaited me; exiting (70) to be restarted' });
  });
});
