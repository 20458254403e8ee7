// The logger (src/log.ts): pino's line format, levels, fields journald and operators rely on, and a write that
// neither throws nor loses a line on a full non-blocking pipe.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createLogger, isoTime, silentLogger, stdoutDestination } from '../../src/log';

function capture(level: string): { log: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[]; raw: string[] } {
  const raw: string[] = [];
  return { log: createLogger(level, { write: (s) => void raw.push(s) }), lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>), raw };
}

describe('logger', () => {
  it('writes one JSON line per entry: level, ISO time, the fields, then msg', () => {
    const { log, lines, raw } = capture('info');
    log.info({ action: 'add-rule', eni: 'eni-1', table: 10001, applied: 0 }, 'ip rule add');
    log.warn('plain message');
    expect(raw.every((l) => l.endsWith('}\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    expect(raw[0]).toMatch(/^\{"level":30,"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","action":"add-rule","eni":"eni-1","table":10001,"applied":0,"msg":"ip rule add"\}\n$/);
    expect(lines()[1]).toMatchObject({ level: 40, msg: 'plain message' });
  });

  it('isoTime spells a time as toISOString does', () => {
    fc.assert(fc.property(fc.integer({ min: -62_198_755_200_000, max: 253_402_300_799_999 }), (ms) => {
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }), { numRuns: 2000 });
    for (const ms of [0, 951_782_400_000, 1_700_000_000_999, 253_402_300_800_000, -62_198_755_200_001]) {
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }
  });

  it('drops entries below its level, and follows a level change', () => {
    const { log, lines } = capture('warn');
    log.info('no');
    log.debug({ a: 1 }, 'no');
    log.error({ err: 'x' }, 'yes');
    expect(log.isLevelEnabled('info')).toBe(false);
    log.level = 'trace';
    expect(log.isLevelEnabled('trace')).toBe(true);
    log.trace('yes too');
    expect(lines().map((l) => [l.level, l.msg])).toEqual([[50, 'yes'], [10, 'yes too']]);
  });

  it('keeps an Error field readable and survives fields JSON cannot hold', () => {
    const { log, lines } = capture('info');
    const cyclic: Record<string, unknown> = { name: 'c' };
    cyclic.self = cyclic;
    log.error({ err: new TypeError('bad value'), count: 1n, cyclic, ok: 'yes' }, 'failed');
    const [line] = lines();
    expect(line).toMatchObject({ level: 50, msg: 'failed', ok: 'yes', count: '1', cyclic: '[object Object]' });
    expect(line?.err).toMatchObject({ type: 'TypeError', message: 'bad value' });
    expect(String((line?.err as { stack: string }).stack)).toContain('TypeError: bad value');
  });

  it('silentLogger writes nothing and enables no level', () => {
    const log = silentLogger();
    expect(log.isLevelEnabled('fatal')).toBe(false);
    expect(() => log.fatal('nothing')).not.toThrow();
  });

  it('writes every byte to a non-blocking pipe whose reader is slow (EAGAIN is waited out, not dropped)', async () => {
    // The child's stdin is a non-blocking pipe of libuv's; 1 MB is far more than the pipe holds (64 kB).
    const child = spawn('sh', ['-c', 'sleep 0.3; wc -c'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const fd = (child.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const line = `${'x'.repeat(1023)}\n`;
    const dest = stdoutDestination(fd);
    for (let i = 0; i < 1024; i++) dest.write(line);
    child.stdin.end();
    await new Promise((resolve) => child.once('close', resolve));
    expect(out.trim()).toBe(String(1024 * 1024));
  });
});
