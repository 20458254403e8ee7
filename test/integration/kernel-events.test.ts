// The event watcher (ip monitor child) against a real kernel, in a throwaway namespace: it reports each kind of
// change, reports 'lost' and restarts when its child is killed, reports 'lost' on a receive-buffer overrun,
// and leaves no process behind.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KernelEvents } from '../../src/kernel/events';
import type { ManagedProcess } from '../../sim/exec';
import { KERNEL_TOOL, createKernelNs, type KernelNs } from '../helpers/kernel-tool';
import { startInNs } from '../helpers/netns';

interface EventLine {
  t: number;
  event: 'ready' | 'change' | 'lost' | 'stopped';
  kinds?: string[];
  reason?: string;
  pid?: number;
}

let k: KernelNs;
const tools: ManagedProcess[] = [];

function lines(p: ManagedProcess): EventLine[] {
  return p.output().stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as EventLine);
}

/** Waits until an event line after index `from` satisfies `pred`; fails with the output so far. */
async function waitFor(p: ManagedProcess, from: number, pred: (e: EventLine) => boolean, ms = 5000): Promise<EventLine> {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = lines(p).slice(from).find(pred);
    if (hit !== undefined) return hit;
    if (Date.now() > deadline || p.hasExited()) {
      throw new Error(`no matching event; output:\n${p.output().stdout}\nstderr:\n${p.output().stderr}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

function startEvents(ms: number): ManagedProcess {
  const p = startInNs(k.ns, KERNEL_TOOL, ['events', String(ms)]);
  tools.push(p);
  return p;
}

const changeOf = (kind: string) => (e: EventLine): boolean => e.event === 'change' && (e.kinds ?? []).includes(kind);

describe('kernel event watcher (ip monitor child)', () => {
  beforeAll(() => {
    k = createKernelNs('ke');
  });

  afterAll(async () => {
    for (const p of tools) await p.stop();
    k?.destroy();
  });

  it('reports link, address, route and rule changes, each as its kind', async () => {
    const p = startEvents(20_000);
    await waitFor(p, 0, (e) => e.event === 'ready');
    const steps: [string, string[]][] = [
      ['link', ['link', 'set', 'v1', 'down']],
      ['address', ['addr', 'add', '10.0.1.10/24', 'dev', 'v0']],
      ['route', ['route', 'add', '10.9.0.0/16', 'via', '10.0.1.1', 'dev', 'v0', 'table', '10001', 'proto', '236']],
      ['rule', ['rule', 'add', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', '236']],
      ['rule', ['rule', 'del', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', '236']],
      ['route', ['route', 'del', '10.9.0.0/16', 'table', '10001']],
      ['address', ['addr', 'del', '10.0.1.10/24', 'dev', 'v0']],
      ['link', ['link', 'set', 'v1', 'up']],
    ];
    for (const [kind, args] of steps) {
      const from = lines(p).length;
      k.ip(args);
      const e = await waitFor(p, from, changeOf(kind));
      expect(e.kinds).toContain(kind);
    }
    // A rule change alone is reported as exactly that kind.
    const from = lines(p).length;
    k.ip(['rule', 'add', 'fwmark', '0x80/0xff', 'lookup', '10001', 'pref', '10200', 'proto', '236']);
    expect((await waitFor(p, from, changeOf('rule'))).kinds).toEqual(['rule']);
    expect(lines(p).some((e) => e.event === 'lost')).toBe(false);
    await p.stop();
  });

  it("survives its child being killed: emits 'lost', restarts, and reports changes again", async () => {
    const p = startEvents(20_000);
    const first = await waitFor(p, 0, (e) => e.event === 'ready');
    expect(first.pid).toBeGreaterThan(0);
    process.kill(first.pid ?? 0, 'SIGKILL');
    const lost = await waitFor(p, 0, (e) => e.event === 'lost');
    expect(lost.reason).toMatch(/ip monitor exited \(SIGKILL\); restarting in \d+ ms/);
    const second = await waitFor(p, 0, (e) => e.event === 'ready' && e.pid !== first.pid);
    await waitFor(p, 0, (e) => e.event === 'lost' && /restarted/.test(e.reason ?? ''));
    const from = lines(p).length;
    k.ip(['addr', 'add', '10.0.3.3/24', 'dev', 'v1']);
    await waitFor(p, from, changeOf('address'));
    // The old child is gone, the new one runs in the namespace.
    expect(() => process.kill(first.pid ?? 0, 0)).toThrow();
    expect(execFileSync('ip', ['netns', 'pids', k.ns], { encoding: 'utf8' })).toContain(String(second.pid));
    await p.stop();
  });

  it("reports 'lost' when the child's receive buffer overruns, and keeps reporting", async () => {
    const p = startEvents(30_000);
    const ready = await waitFor(p, 0, (e) => e.event === 'ready');
    const pid = ready.pid ?? 0;
    // Freeze the child, make 6000 route changes (far more than its 1 MB buffer holds), thaw it.
    process.kill(pid, 'SIGSTOP');
    try {
      const batch = Array.from({ length: 6000 }, (_, i) => `route add 10.77.${i >> 8}.${i & 255}/32 dev v0 table 10005 proto 236`);
      execFileSync('ip', ['-n', k.ns, '-batch', '-'], { input: batch.join('\n') + '\n' });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const lost = await waitFor(p, 0, (e) => e.event === 'lost');
    expect(lost.reason).toContain('No buffer space available');
    // The same child goes on (no restart), and later changes are still reported.
    const from = lines(p).length;
    k.ip(['route', 'flush', 'table', '10005']);
    await waitFor(p, from, changeOf('route'));
    expect(lines(p).filter((e) => e.event === 'ready')).toHaveLength(1);
    await p.stop();
  });

  it('a storm of changes is coalesced into few change events', async () => {
    const p = startEvents(30_000);
    const ready = await waitFor(p, 0, (e) => e.event === 'ready');
    const from = lines(p).length;
    // Freeze the child while 300 rules are added (well within its buffer), so that on thaw it writes them
    // back to back, as in a real storm.
    process.kill(ready.pid ?? 0, 'SIGSTOP');
    try {
      const batch = Array.from({ length: 300 }, (_, i) => `rule add from 10.88.${i >> 8}.${i & 255} lookup 10001 pref 20000 proto 236`);
      execFileSync('ip', ['-n', k.ns, '-batch', '-'], { input: batch.join('\n') + '\n' });
      k.ip(['link', 'set', 'v0', 'down']); // a marker after the storm
    } finally {
      process.kill(ready.pid ?? 0, 'SIGCONT');
    }
    await waitFor(p, from, changeOf('link'));
    const changes = lines(p).slice(from).filter((e) => e.event === 'change');
    expect(changes.length).toBeGreaterThan(0);
    expect(changes.length).toBeLessThan(30); // 301 lines
    expect(lines(p).some((e) => e.event === 'lost')).toBe(false);
    k.ip(['link', 'set', 'v0', 'up']);
    await p.stop();
  });

  it('stops cleanly: the tool exits and no ip monitor is left in the namespace', async () => {
    for (const t of tools) await t.stop(); // the tools of earlier tests (a failed test may not have stopped its own)
    const p = startEvents(300);
    await waitFor(p, 0, (e) => e.event === 'stopped', 10_000);
    expect(await p.exited).toBe(0);
    expect(execFileSync('ip', ['netns', 'pids', k.ns], { encoding: 'utf8' }).trim()).toBe('');
  });

  it('start() rejects, without crashing, when ip cannot be run', async () => {
    const ev = new KernelEvents({ ipPath: '/nonexistent/ip' });
    await expect(ev.start()).rejects.toThrow(/cannot run \/nonexistent\/ip monitor: spawn \/nonexistent\/ip ENOENT/);
    expect(ev.pid).toBeUndefined();
  });
});
