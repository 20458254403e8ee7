// Failover of a secondary private IP between two simulated instances on one subnet (docs/failover.md), each move
// done as a failover script does it: the AWS call (the VPC moves the IP at once, both IMDS follow at once here), then
// `ip address add` on the new owner and `ip address del` on the old one. A client connects every 20 ms all along.
// Figures, from `ip monitor` timestamps in each instance and the client's attempts:
//   failover     IP moved in IMDS → first connection answered through the new owner
//   rule in      address added on the new owner → its `from` rule in place (target 50 ms: IMDS consistent)
//   rule gone    address deleted on the old owner → its rule deleted (target 1 s)
// Baseline: without address events the new owner's rule waits for the periodic IMDS refresh (60 s by default).
import { startMonitor, median, percentile, type Monitor, type MonitorLine } from './inspect';
import { firstAnswered, startAnswerServer, startConnectLoop } from '../sim/connect-loop';
import { startSimulatedEc2, type SimulatedEc2 } from '../sim/ec2';
import type { ManagedProcess } from '../sim/exec';
import { sleep, until as untilWithin } from './helpers';

/** The failover scenario's waits: 15 s, each one move or less. */
const until = (what: string, check: () => boolean | Promise<boolean>): Promise<void> => untilWithin(what, check, 15_000);

export interface FailoverRow {
  figure: string;
  value: string;
  baseline: string;
  target?: string;
  met?: boolean;
}

const PORT = 8080;
const FLOATING = '10.0.1.30';
const SYSCTLS = { 'net.ipv4.ip_nonlocal_bind': '1' };
const CONFIG = { sync: { pendingRetryBaseMs: 50 } };
const ms = (v: number): string => `${v.toFixed(0)} ms`;

const ruleLine = (deleted: boolean) => (l: MonitorLine): boolean =>
  l.text.startsWith('[RULE]') && l.text.includes('Deleted') === deleted && l.text.includes(`from ${FLOATING} lookup 10001`);
const addrLine = (deleted: boolean) => (l: MonitorLine): boolean =>
  l.text.startsWith('[ADDR]') && l.text.includes('Deleted') === deleted && l.text.includes(` ${FLOATING}/32`);
const firstAfter = (mon: Monitor, from: number, match: (l: MonitorLine) => boolean): MonitorLine | undefined =>
  mon.lines().find((l) => l.t >= from && match(l));

/** `moves` moves of the floating IP, alternating between the two instances. */
export async function failoverBench(moves: number): Promise<FailoverRow[]> {
  const a = await startSimulatedEc2({
    prefix: `benchfo-${process.pid}`, hostSysctls: SYSCTLS, config: CONFIG,
    enis: [{ name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 }, { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 }],
  });
  const started: ManagedProcess[] = [];
  const monitors: Monitor[] = [];
  try {
    const b = await a.addInstance({
      hostSysctls: SYSCTLS, config: CONFIG,
      enis: [{ name: 'eth0', ipv4s: ['10.0.1.110'], deviceNumber: 0 }, { name: 'eth1', ipv4s: ['10.0.1.120'], deviceNumber: 1 }],
    });
    const names = new Map<SimulatedEc2, string>([[a, 'A'], [b, 'B']]);
    const mon = new Map<SimulatedEc2, Monitor>();
    for (const sim of [a, b]) {
      started.push(await startAnswerServer(sim.net.ns.host, '0.0.0.0', PORT, names.get(sim) ?? '?'), sim.startDaemon());
      const m = await startMonitor(sim.net.ns.host, ['address', 'rule']);
      monitors.push(m);
      mon.set(sim, m);
    }
    const converged = async (sim: SimulatedEc2) => until('ec2netd plan exits 0', async () => (await sim.ec2netd(['plan'])).code === 0);
    await Promise.all([converged(a), converged(b)]);
    const hasRule = (sim: SimulatedEc2, deleted: boolean, from: number) => firstAfter(mon.get(sim) as Monitor, from, ruleLine(deleted)) !== undefined;
    await a.assignIp('eth1', FLOATING);
    const t = Date.now();
    await a.net.exec('host', ['ip', 'address', 'add', `${FLOATING}/32`, 'dev', 'eth1']);
    await until('A holds the floating IP', () => hasRule(a, false, t));

    const loop = startConnectLoop(a.net.ns.client, FLOATING, PORT);
    started.push(loop.process);
    const failover: number[] = [];
    const ruleIn: number[] = [];
    const ruleGone: number[] = [];
    for (let i = 0; i < moves; i++) {
      const [to, from] = i % 2 === 0 ? [b, a] : [a, b];
      const name = names.get(to) ?? '?';
      const t0 = Date.now();
      const moved = await to.reassignIp('eth1', FLOATING);
      const listedAt = await moved.listed;
      await moved.unlisted;
      await Promise.all([
        to.net.exec('host', ['ip', 'address', 'add', `${FLOATING}/32`, 'dev', 'eth1']),
        from.net.exec('host', ['ip', 'address', 'del', `${FLOATING}/32`, 'dev', 'eth1']),
      ]);
      await until(`move ${i + 1}: answered by ${name}`, () => firstAnswered(loop.attempts(), name, t0) !== undefined);
      await until(`move ${i + 1}: rules follow`, () => hasRule(to, false, t0) && hasRule(from, true, t0));
      const toMon = mon.get(to) as Monitor;
      const fromMon = mon.get(from) as Monitor;
      const added = firstAfter(toMon, t0, addrLine(false));
      const deleted = firstAfter(fromMon, t0, addrLine(true));
      if (added === undefined || deleted === undefined) throw new Error('bench failover: an address event was not seen');
      failover.push((firstAnswered(loop.attempts(), name, t0)?.start ?? NaN) - listedAt);
      ruleIn.push((firstAfter(toMon, t0, ruleLine(false))?.t ?? NaN) - added.t);
      ruleGone.push((firstAfter(fromMon, t0, ruleLine(true))?.t ?? NaN) - deleted.t);
      await sleep(200);
    }
    const fig = (v: number[]) => `${ms(median(v))} / ${ms(percentile(v, 90))} (max ${ms(Math.max(...v))})`;
    const baseline = 'periodic refresh: up to 60 s';
    return [
      { figure: `failover: IP moved in IMDS → first answer via the new owner, median / p90 of ${moves} (client every 20 ms)`, value: fig(failover), baseline, target: '≤ 1 s', met: percentile(failover, 90) <= 1000 },
      { figure: `failover: address added (IMDS lists it) → from rule, median / p90 of ${moves}`, value: fig(ruleIn), baseline, target: '≤ 50 ms', met: median(ruleIn) <= 50 },
      { figure: `failover: address deleted (IMDS no longer lists it) → rule gone, median / p90 of ${moves}`, value: fig(ruleGone), baseline, target: '≤ 1 s', met: percentile(ruleGone, 90) <= 1000 },
    ];
  } finally {
    await Promise.all(monitors.map((m) => m.stop()));
    await Promise.all(started.map((p) => p.stop(500)));
    await a.destroy();
  }
}
