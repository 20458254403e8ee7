// A fight: another process deletes ec2netd's `from` rule as fast as it can. ec2netd puts it back, says once that it
// is in a fight and with whom, backs off instead of matching the other party's pace (a bounded journal), keeps
// doing everything else (an IMDS change on another ENI), and has the rule back soon after the fight stops.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startFighter } from '../../sim/fighter';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';
import { logMark, logSince, waitConverged, waitForLog, type LogLine } from '../helpers/daemon-watch';

const CAP_MS = 1000;
const FIGHT_MS = 3000;
const RULE = '10100 from 10.0.1.20 lookup 10001';
const WARN = 40;
const isFight = (l: LogLine): boolean => l.action === 'fight' && l.level === WARN;
const isFightOver = (l: LogLine): boolean => l.msg.startsWith('fight over:');

describe('a fight over a rule', () => {
  const sim = useSimulatedEc2('fight', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
      { name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2 },
    ],
    config: {
      imds: { endpoint: 'http://169.254.169.254', refreshIntervalMs: 600_000 },
      sync: { fightCapMs: CAP_MS },
    },
  });
  let daemon: ManagedProcess;
  beforeAll(async () => {
    daemon = sim().startDaemon();
    await waitConverged(sim());
  });
  afterAll(async () => { await daemon.stop(3000); });

  it('is damped and reported once, does not hold back other work, and ends with the rule in place', async () => {
    expect(await ownedRules(sim())).toContain(RULE);
    const mark = logMark(daemon);
    const started = Date.now();
    const fighter = startFighter(sim().net.ns.host, 'rule del from 10.0.1.20 lookup 10001 pref 10100');
    let attempts: number;
    try {
      const warning = await waitForLog(daemon, mark, isFight, 'the fight warning');
      expect(warning.msg).toContain('rule from 10.0.1.20/32 lookup 10001 pref 10100');
      expect(warning.msg).toContain('no known network manager found');
      // Other work goes on during the fight: a secondary IP assigned to eth2 (IMDS read on SIGHUP).
      await sim().assignIp('eth2', '10.0.1.31');
      daemon.child.kill('SIGHUP');
      await eventually('10.0.1.31 configured during the fight', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.31 lookup 10002'));
      const status = await sim().ec2netd(['status']);
      expect(status.stdout).toMatch(/^fight: rule from 10\.0\.1\.20\/32 lookup 10001 pref 10100 proto 236: removed by another process, put back \d+ times/m);
      await new Promise((r) => setTimeout(r, Math.max(0, started + FIGHT_MS - Date.now())));
    } finally {
      attempts = await fighter.stop();
    }
    const during = logSince(daemon, mark);
    expect(attempts).toBeGreaterThan(500); // the other party really fought
    expect(during.filter(isFight)).toHaveLength(1);
    expect(during.length, during.map((l) => l.msg).join('\n')).toBeLessThan(20);
    // After the fight the withheld repair is made within the cap (plus a sync), and the fight is declared over.
    await eventually('the rule back', async () => (await ownedRules(sim())).includes(RULE), CAP_MS + 2000);
    await waitForLog(daemon, mark, isFightOver, 'fight over', 2 * CAP_MS + 3000);
    expect(logSince(daemon, mark).filter(isFight)).toHaveLength(1);
    expect((await sim().ec2netd(['status'])).stdout).not.toContain('fight:');
  });
});
