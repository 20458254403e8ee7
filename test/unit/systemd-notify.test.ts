import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNotifier, formatNotify, monotonicUsec, recordingNotifier, watchdogIntervalMs } from '../../src/systemd/notify';

let dir: string;
let receiver: UnixDgramSocket;
let received: string[];
let path: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ec2netd-notify-'));
  path = join(dir, 'notify');
  received = [];
  receiver = createSocket('unix_dgram', (msg) => received.push(msg.toString()));
  receiver.bind(path);
});

afterEach(() => {
  receiver.close();
  rmSync(dir, { recursive: true, force: true });
});

async function messages(count: number): Promise<string[]> {
  const deadline = Date.now() + 2000;
  while (received.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return received;
}

function pythonMonotonicUsec(): bigint {
  const ns = execFileSync('python3', ['-c', 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))']).toString().trim();
  return BigInt(ns) / 1000n;
}

describe('sd_notify', () => {
  it('sends READY, STATUS, WATCHDOG, STOPPING as KEY=value lines', async () => {
    const warnings: string[] = [];
    const n = createNotifier({ env: { NOTIFY_SOCKET: path }, onWarning: (m) => warnings.push(m) });
    expect(n.enabled).toBe(true);
    n.ready('converged: 2 ENIs');
    n.status('syncing');
    n.watchdog();
    n.stopping();
    expect(await messages(4)).toEqual(['READY=1\nSTATUS=converged: 2 ENIs', 'STATUS=syncing', 'WATCHDOG=1', 'STOPPING=1']);
    expect(warnings).toEqual([]);
  });

  it('sends RELOADING=1 with MONOTONIC_USEC on the CLOCK_MONOTONIC time line', async () => {
    const before = pythonMonotonicUsec();
    createNotifier({ env: { NOTIFY_SOCKET: path } }).reloading();
    const after = pythonMonotonicUsec();
    const [msg] = await messages(1);
    const match = /^RELOADING=1\nMONOTONIC_USEC=(\d+)$/.exec(msg ?? '');
    expect(match).not.toBeNull();
    const usec = BigInt(match?.[1] ?? '0');
    expect(usec >= before && usec <= after).toBe(true);
    expect(monotonicUsec() >= usec).toBe(true);
  });

  it('keeps a multi-line status on one line', () => {
    expect(formatNotify([['STATUS', 'a\nb']])).toBe('STATUS=a b');
  });

  it('is a no-op without NOTIFY_SOCKET', () => {
    const n = createNotifier({ env: {} });
    expect(n.enabled).toBe(false);
    n.ready();
  });

  it('reports an abstract socket once and does nothing', () => {
    const warnings: string[] = [];
    const n = createNotifier({ env: { NOTIFY_SOCKET: '@/org/freedesktop/systemd1/notify' }, onWarning: (m) => warnings.push(m) });
    n.ready();
    expect(n.enabled).toBe(false);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/abstract socket/);
  });

  it('never throws when the socket is gone, and warns once', () => {
    const warnings: string[] = [];
    const n = createNotifier({ env: { NOTIFY_SOCKET: join(dir, 'missing') }, onWarning: (m) => warnings.push(m) });
    n.watchdog();
    n.watchdog();
    expect(warnings).toEqual([`sd_notify to ${join(dir, 'missing')} failed: send ENOENT`]);
  });

  it('carries the watchdog interval of its environment', () => {
    expect(createNotifier({ env: { NOTIFY_SOCKET: path, WATCHDOG_USEC: '4000000' } }).watchdogIntervalMs()).toBe(2000);
    expect(createNotifier({ env: { NOTIFY_SOCKET: path } }).watchdogIntervalMs()).toBeUndefined();
  });

  it('records messages in the fake', () => {
    const n = recordingNotifier();
    n.ready('ok');
    n.stopping();
    expect(n.messages).toEqual(['READY=1\nSTATUS=ok', 'STOPPING=1']);
  });
});

describe('watchdogIntervalMs', () => {
  it('is half the period', () => {
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42)).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '3000000', WATCHDOG_PID: '42' }, 42)).toBe(1500);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '1000' }, 42)).toBe(1);
  });
  it('is undefined when not enabled or meant for another process', () => {
    expect(watchdogIntervalMs({}, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 42)).toBeUndefined();
  });
});
