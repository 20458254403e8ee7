// Bench: a 10-s fight over one rule. Another process deletes eth1's `from` rule every millisecond (sim/fighter.ts);
// measured: the daemon's CPU time (utime+stime from /proc/<pid>/stat, and its live children's), its journal
// lines during the fight, and how long after the fight stops the rule is back (the damper's withheld repair).
// Default configuration (sync.fightCapMs 30 s). Before the damper (issue 9): 2.3-2.6 CPU-s and 638-716 lines.
import { startSimulatedEc2 } from '../sim/ec2';
import { ipJson } from '../sim/exec';
import { startFighter } from '../sim/fighter';
import { liveChildren, procStat } from './inspect';
import { sleep, until } from './helpers';

export interface FightRow {
  figure: string;
  value: string;
  baseline: string;
  target?: string;
  met?: boolean;
}

const FIGHT_MS = 10_000;

function cpu(pid: number): { daemon: number; monitor: number } {
  let monitor = 0;
  for (const c of liveChildren(pid)) {
    try { monitor += procStat(c.pid).cpuS; } catch { /* gone */ }
  }
  return { daemon: procStat(pid).cpuS, monitor };
}

async function ruleThere(ns: string): Promise<boolean> {
  const rules = await ipJson<Array<{ src?: string; table?: string; priority: number }>>(ns, ['rule', 'show']);
  return rules.some((r) => r.src === '10.0.1.20' && r.table === '10001' && r.priority === 10100);
}

export async function fight(): Promise<FightRow[]> {
  const sim = await startSimulatedEc2({
    prefix: `benchf-${process.pid}`,
    enis: [{ name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 }, { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 }],
    config: {},
  });
  try {
    const daemon = sim.startDaemon();
    const host = sim.net.ns.host;
    await until('converged', async () => (await sim.ec2netd(['plan'])).code === 0, 60_000);
    await sleep(1000);
    // Baseline, same daemon: 10 s without a fight.
    const idleBefore = cpu(daemon.pid);
    await sleep(FIGHT_MS);
    const idleS = cpu(daemon.pid).daemon - idleBefore.daemon;
    const mark = daemon.output().stdout.length;
    const before = cpu(daemon.pid);
    const fighter = startFighter(host, 'rule del from 10.0.1.20 lookup 10001 pref 10100');
    await sleep(FIGHT_MS);
    const attempts = await fighter.stop();
    const stoppedAt = Date.now();
    const after = cpu(daemon.pid);
    const lines = daemon.output().stdout.slice(mark).split('\n').filter((l) => l.startsWith('{'));
    const warnings = lines.filter((l) => l.includes('"action":"fight"') && l.includes('"level":40')).length;
    await until('the rule back after the fight', () => ruleThere(host), 60_000);
    const backMs = Date.now() - stoppedAt;
    await daemon.stop(3000);
    const cpuS = after.daemon - before.daemon;
    const monitorS = after.monitor - before.monitor;
    const baseline = 'before the damper: 2.3-2.6 CPU-s, 638-716 lines';
    return [
      {
        figure: `fight over one rule, 10 s (${attempts} deletes sent): daemon CPU`,
        value: `${cpuS.toFixed(2)} CPU-s (live children ${monitorS.toFixed(2)})`, baseline: `10 s idle: ${idleS.toFixed(2)} CPU-s; ${baseline}`, target: '< 0.3 CPU-s', met: cpuS < 0.3,
      },
      {
        figure: 'fight over one rule, 10 s: journal lines', value: `${lines.length} (fight warnings: ${warnings})`, baseline,
        target: '< 20, one warning', met: lines.length < 20 && warnings === 1,
      },
      {
        figure: 'fight stops → rule back', value: `${(backMs / 1000).toFixed(1)} s`, baseline: 'cap (sync.fightCapMs) 30 s',
        target: '≤ 30 s', met: backMs <= 30_000,
      },
    ];
  } finally {
    await sim.destroy();
  }
}
