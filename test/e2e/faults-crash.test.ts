// kill -9 in the middle of a large sync (15 ENIs × 50 IPv4s), then a restart: the kernel must end up exactly in the
// state a clean sync gives (no duplicates, nothing missing), and `ec2netd flush` must then leave nothing of
// ec2netd's behind, which it can only do if the address ledger knows every address ec2netd added before it died.
//
// The kill points are random (seeded: set FAULTS_SEED to replay a run; the seed is printed) and fall between the
// first and the last kernel write of the sync, as seen by an `ip monitor` of the test's own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { kernelSnapshot, snapshotDiff, startMonitor, waitQuiet, type KernelSnapshot, type MonitorLine } from '../../bench/inspect';
import { useSimulatedEc2 } from '../helpers/sim';
import { waitConverged, waitSnapshot } from '../helpers/daemon-watch';
import { seededRandom } from '../helpers/random';

const ENIS = 15;
const IPS_PER_ENI = 50;
const ROUNDS = 4;

const eniName = (k: number): string => `eth${k}`;
const eniIps = (k: number): string[] => Array.from({ length: IPS_PER_ENI }, (_, i) => `10.0.${k}.${10 + i}`);

/** A write of the sync: an address in the ENIs' subnet, or an object of ec2netd's (proto 236). */
const isSyncWrite = (l: MonitorLine): boolean => /^\[ADDR\].* inet 10\.0\./.test(l.text) || /\bproto 236\b/.test(l.text);

describe(`kill -9 during a sync of ${ENIS} ENIs × ${IPS_PER_ENI} IPv4s`, () => {
  const sim = useSimulatedEc2('faultcrash', {
    subnet: '10.0.0.0/16',
    // The fabric side (source check, neighbours) only for each ENI's primary IP: no packets are sent here, and
    // 750 nft elements would cost seconds of setup. IMDS lists all 50 (set in beforeAll).
    enis: Array.from({ length: ENIS }, (_, k) => ({ name: eniName(k), ipv4s: [eniIps(k)[0] ?? ''], deviceNumber: k })),
    config: { sync: { pendingRetryBaseMs: 50 } },
  });
  const seed = Number(process.env.FAULTS_SEED ?? Date.now() % 1_000_000);
  const random = seededRandom(seed);
  let empty: KernelSnapshot;
  let want: KernelSnapshot;
  let applyMs = 0;
  const daemons: ManagedProcess[] = [];
  const start = (): ManagedProcess => {
    const d = sim().startDaemon();
    daemons.push(d);
    return d;
  };

  beforeAll(async () => {
    console.log(`faults-crash: FAULTS_SEED=${seed}`);
    for (let k = 0; k < ENIS; k++) await sim().patchImdsEni(eniName(k), { ipv4s: eniIps(k) });
    empty = await kernelSnapshot(sim().net.ns.host);
  });
  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop(2000)));
  });

  it('a clean run gives the reference state, and flush returns to empty', async () => {
    const mon = await startMonitor(sim().net.ns.host);
    try {
      const d = start();
      await waitConverged(sim(), 60_000);
      await waitQuiet(mon, 200, 5000);
      const all = mon.lines();
      console.log(`faults-crash: first events: ${all.slice(0, 3).map((l) => l.text.slice(0, 80)).join(' | ')}`);
      const writes = all.filter(isSyncWrite);
      applyMs = (writes.at(-1)?.t ?? 0) - (writes[0]?.t ?? 0);
      console.log(`faults-crash: clean sync: ${writes.length} kernel events over ${applyMs.toFixed(0)} ms`);
      await d.stop(5000);
      expect(await d.exited).toBe(0);
    } finally {
      await mon.stop();
    }
    want = await kernelSnapshot(sim().net.ns.host);
    const owned = want.rules.filter((l) => /\bproto 236\b/.test(l));
    expect(owned).toHaveLength((ENIS - 1) * IPS_PER_ENI);
    expect(want.addresses.filter((l) => /inet 10\.0\./.test(l))).toHaveLength(ENIS * IPS_PER_ENI);
    const flush = await sim().ec2netd(['flush']);
    expect(flush.code, flush.stderr).toBe(0);
    expect(snapshotDiff(empty, await kernelSnapshot(sim().net.ns.host))).toEqual([]);
  });

  for (let round = 1; round <= ROUNDS; round++) {
    it(`round ${round}: killed at a random point of the sync, restarted: exactly the desired state; flush leaves nothing`, async () => {
      expect(applyMs, 'the clean run measured the sync').toBeGreaterThan(0);
      const mon = await startMonitor(sim().net.ns.host);
      let writesBeforeKill = 0;
      try {
        const victim = start();
        // Wait for the first kernel write of the sync, then kill at a random point of its span.
        const deadline = Date.now() + 30_000;
        while (!mon.lines().some(isSyncWrite)) {
          if (victim.hasExited() || Date.now() > deadline) throw new Error(`no kernel write seen: ${victim.output().stderr}`);
          await new Promise((r) => setTimeout(r, 2));
        }
        const delay = Math.floor(random() * applyMs);
        await new Promise((r) => setTimeout(r, delay));
        process.kill(victim.pid, 'SIGKILL');
        expect(await victim.exited).toBe('SIGKILL');
        await victim.stop(); // any orphaned child (an iptables-save), as systemd's KillMode=control-group would
        await waitQuiet(mon, 100, 2000);
        writesBeforeKill = mon.lines().length;
        console.log(`faults-crash: round ${round}: killed ${delay} ms after the first write, after ${writesBeforeKill} kernel events`);
      } finally {
        await mon.stop();
      }

      const survivor = start();
      await waitConverged(sim(), 60_000);
      await waitSnapshot(sim(), want, `round ${round}: after restart`, 10_000);
      await survivor.stop(5000);
      expect(await survivor.exited).toBe(0);

      // Nothing of ec2netd's is left after a flush: every address it added is in its ledger.
      const flush = await sim().ec2netd(['flush']);
      expect(flush.code, flush.stderr).toBe(0);
      const left = snapshotDiff(empty, await kernelSnapshot(sim().net.ns.host));
      const addressesLeft = left.filter((l) => l.startsWith('+ addresses:'));
      expect({ addressesLeft: addressesLeft.length, otherObjectsLeft: left.length - addressesLeft.length, first: left.slice(0, 5) },
        `round ${round}: left behind after flush (killed after ${writesBeforeKill} kernel events)`)
        .toEqual({ addressesLeft: 0, otherObjectsLeft: 0, first: [] });
    });
  }
});
