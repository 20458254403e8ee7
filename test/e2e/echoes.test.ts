// ec2netd's own echoes are dropped in the kernel (src/kernel/event-filter.ts): what relied on them still works.
// A foreign deletion is repaired at once, and the repair's own notification wakes no sync (the sync after it is the
// one the next foreign change asks for, with that change's kinds only); an address ec2netd added and another process
// deleted before any sync observed it is watched as a failover, not put back at once. The fight damper
// (fight.test.ts), the retry of a refused write (isolation.test.ts), the storms and their reclaim (storm.test.ts)
// and the failover watch (failover.test.ts) run with the filter too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { logMark, logSince, waitConverged, waitForLog, type LogLine } from '../helpers/daemon-watch';
import { addresses, eventually, ownedRules, routes, useSimulatedEc2 } from '../helpers/sim';

interface SyncLine extends LogLine { kinds?: string; planned?: number; applied?: number }
const isSync = (l: LogLine): boolean => l.action === 'sync';
const syncsSince = (daemon: ManagedProcess, mark: number): SyncLine[] => logSince(daemon, mark).filter(isSync);

describe("ec2netd's own echoes dropped in the kernel", () => {
  const sim = useSimulatedEc2('echoes', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
    ],
    // No periodic IMDS refresh during the tests: every sync is caused by what a test does.
    config: { imds: { refreshIntervalMs: 600_000 }, sync: { pendingRetryBaseMs: 50 } },
  });
  let daemon: ManagedProcess;
  const host = (argv: string[]): Promise<unknown> => sim().net.exec('host', argv);
  let markers = 0;
  /** A change of another process that asks for a sync of kind 'link' alone: the next sync is its own. */
  const marker = async (): Promise<void> => { await host(['ip', 'link', 'set', 'dev', 'lo', 'alias', `echo-marker-${++markers}`]); };

  beforeAll(async () => {
    daemon = sim().startDaemon(['--log-level', 'debug']);
    await waitConverged(sim());
  });
  afterAll(async () => { await daemon.stop(3000); });

  it('the event socket is filtered (no fallback warning)', () => {
    expect(logSince(daemon, 0).filter((l) => /socket filter/.test(l.msg))).toEqual([]);
  });

  for (const [what, kind, undo, back] of [
    ['a rule', 'rule', ['ip', 'rule', 'del', 'from', '10.0.1.20', 'lookup', '10001', 'pref', '10100'],
      async () => (await ownedRules(sim())).includes('10100 from 10.0.1.20 lookup 10001')],
    ['a route', 'route', ['ip', 'route', 'del', 'default', 'table', '10001'],
      async () => (await routes(sim(), 10001)).some((r) => r.dst === 'default' && r.gateway === '10.0.1.1')],
  ] as const) {
    it(`${what} deleted by another process is put back at once; its repair wakes no sync`, async () => {
      expect(await back()).toBe(true);
      const mark = logMark(daemon);
      await host([...undo]);
      await eventually(`${what} back`, back, 5000);
      const isRepair = (l: LogLine): boolean => isSync(l) && ((l as SyncLine).applied ?? 0) > 0 && ((l as SyncLine).kinds ?? '').split(',').includes(kind);
      await waitForLog(daemon, mark, isRepair, 'the repair sync');
      // The repair's own notification (an RTM_NEW* of kind `kind`) would be on the socket before this marker's:
      // a sync it asked for would run before the marker's, or have its kind merged into the marker's.
      await marker();
      const syncs = syncsSince(daemon, mark);
      const after = (): SyncLine[] => syncsSince(daemon, mark).slice(syncs.findIndex(isRepair) + 1);
      await eventually('the marker sync', async () => after().some((s) => (s.kinds ?? '').split(',').includes('link')), 5000);
      const since = after();
      const detail = logSince(daemon, mark).map((l) => JSON.stringify(l)).join('\n');
      // Other syncs may run meanwhile (the kernel finishing an IPv6 address's duplicate detection: 'address'), none for `kind`.
      expect(since.filter((s) => (s.kinds ?? '').split(',').includes(kind)), detail).toEqual([]);
      expect(since.every((s) => s.planned === 0), detail).toBe(true);
      expect((await sim().ec2netd(['plan'])).code).toBe(0);
    });
  }

  it('an address ec2netd added, deleted by another process before any sync observed it: watched (a failover), not put back at once', async () => {
    await sim().assignIp('eth1', '10.0.1.22');
    let mark = logMark(daemon);
    daemon.child.kill('SIGHUP');
    await eventually('ec2netd adds 10.0.1.22', async () => (await addresses(sim(), 'eth1')).includes('10.0.1.22/24'), 5000);
    await waitForLog(daemon, mark, (l) => isSync(l) && ((l as SyncLine).applied ?? 0) > 0, 'the sync that added it');
    mark = logMark(daemon);
    await host(['ip', 'address', 'del', '10.0.1.22/24', 'dev', 'eth1']);
    await waitForLog(daemon, mark, (l) => l.msg.startsWith('10.0.1.22 deleted from eth1 while IMDS lists it: not put back'), 'the watch');
    // Not re-added meanwhile: the sync that saw the deletion planned nothing for it.
    expect(logSince(daemon, mark).filter((l) => isSync(l) && ((l as SyncLine).applied ?? 0) > 0)).toEqual([]);
    expect(await addresses(sim(), 'eth1')).not.toContain('10.0.1.22/24');
    await sim().unassignIp('eth1', '10.0.1.22');
    await eventually('its rule gone once IMDS no longer lists it', async () => !(await ownedRules(sim())).some((r) => r.includes('10.0.1.22')), 10_000);
  });
});
