// Secondary-IP failover (docs/failover.md): a failover script adds or deletes the address, IMDS follows after its
// propagation delay, and ec2netd follows the address events with targeted IMDS reads instead of waiting for the 60 s
// refresh. Then two instances on one subnet hand a floating IP back and forth with a client connecting all along.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMonitor, waitQuiet, type Monitor } from '../../bench/inspect';
import { firstAnswered, startAnswerServer, startConnectLoop, type ConnectLoop } from '../../sim/connect-loop';
import type { SimulatedEc2 } from '../../sim/ec2';
import type { ManagedProcess } from '../../sim/exec';
import { waitForTcp } from '../../sim/probe';
import { logMark, logSince, waitConverged } from '../helpers/daemon-watch';
import { addresses, eventually, flowPort, ownedRules, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;
const FLOATING = '10.0.1.30';
const SYSCTLS = { 'net.ipv4.ip_nonlocal_bind': '1' };
const CONFIG = { sync: { pendingRetryBaseMs: 50 } };

describe('secondary-IP failover', () => {
  const simA = useSimulatedEc2('failover', {
    hostSysctls: SYSCTLS,
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    config: CONFIG,
  });
  let simB: SimulatedEc2;
  const daemons = new Map<SimulatedEc2, ManagedProcess>();
  const servers: ManagedProcess[] = [];
  let mon: Monitor;

  const host = (sim: SimulatedEc2, argv: string[]) => sim.net.exec('host', argv);
  const hasRule = async (sim: SimulatedEc2, ip: string) => (await ownedRules(sim)).includes(`10100 from ${ip} lookup 10001`);
  /** `ip monitor` lines since `from` that add `ip` (not deletions). */
  const addressAdds = (ip: string, from: number) =>
    mon.lines().filter((l) => l.t >= from && l.text.startsWith('[ADDR]') && !l.text.includes('Deleted') && l.text.includes(` ${ip}/`));

  beforeAll(async () => {
    simB = await simA().addInstance({
      hostSysctls: SYSCTLS,
      enis: [
        { name: 'eth0', ipv4s: ['10.0.1.110'], deviceNumber: 0 },
        { name: 'eth1', ipv4s: ['10.0.1.120'], deviceNumber: 1 },
      ],
      config: CONFIG,
    });
    // Every address answers with the name of the instance that holds it.
    for (const [sim, name] of [[simA(), 'A'], [simB, 'B']] as const) {
      servers.push(await startAnswerServer(sim.net.ns.host, '0.0.0.0', PORT, name));
      daemons.set(sim, sim.startDaemon());
    }
    await Promise.all([waitConverged(simA()), waitConverged(simB)]);
    mon = await startMonitor(simA().net.ns.host, ['address', 'rule']);
  });
  afterAll(async () => {
    await mon?.stop();
    await Promise.all(servers.map((s) => s.stop(500)));
  });

  it('IMDS lists the IP, then the address is added: its rule follows and the client is answered, without a refresh', async () => {
    await simA().assignIp('eth1', '10.0.1.22');
    await host(simA(), ['ip', 'address', 'add', '10.0.1.22/32', 'dev', 'eth1']);
    await eventually('the from rule of 10.0.1.22', () => hasRule(simA(), '10.0.1.22'), 5000);
    const r = await waitForTcp(simA().net.ns.client, '10.0.1.22', PORT, { srcPort: flowPort(), deadlineMs: 5000 });
    expect(r.answer).toBe('A');
  });

  it('the address deleted and IMDS no longer listing it: the rule goes and the address is not put back', async () => {
    const from = Date.now();
    await host(simA(), ['ip', 'address', 'del', '10.0.1.22/32', 'dev', 'eth1']);
    await simA().unassignIp('eth1', '10.0.1.22');
    await eventually('the rule of 10.0.1.22 gone', async () => !(await hasRule(simA(), '10.0.1.22')), 5000);
    await waitQuiet(mon, 300, 3000);
    expect(addressAdds('10.0.1.22', from)).toEqual([]);
    expect(await addresses(simA(), 'eth1')).toEqual(['10.0.1.20/24']);
  });

  it('an address ec2netd added, deleted while IMDS lists it 2 s more: never put back, its rule gone once IMDS settles', async () => {
    await simA().assignIp('eth1', '10.0.1.23');
    daemons.get(simA())?.child.kill('SIGHUP');
    await eventually('ec2netd adds 10.0.1.23', async () => (await addresses(simA(), 'eth1')).includes('10.0.1.23/24'), 5000);
    const mark = logMark(daemons.get(simA()) as ManagedProcess);
    const from = Date.now();
    await host(simA(), ['ip', 'address', 'del', '10.0.1.23/24', 'dev', 'eth1']);
    await eventually('status shows the watch', async () =>
      (await simA().ec2netd(['status'])).stdout.includes('watch: 10.0.1.23 was deleted from eth1 while IMDS lists it'), 1500);
    await new Promise((r) => setTimeout(r, Math.max(0, from + 2000 - Date.now())));
    expect(await hasRule(simA(), '10.0.1.23')).toBe(true); // IMDS still lists it: its rule stays meanwhile
    await simA().unassignIp('eth1', '10.0.1.23');
    await eventually('the rule of 10.0.1.23 gone', async () => !(await hasRule(simA(), '10.0.1.23')), 5000);
    await waitQuiet(mon, 300, 3000);
    expect(addressAdds('10.0.1.23', from)).toEqual([]);
    expect(logSince(daemons.get(simA()) as ManagedProcess, mark).map((l) => l.msg))
      .toContainEqual(expect.stringMatching(/^10\.0\.1\.23 deleted from eth1 while IMDS lists it: not put back/));
  });

  it('a floating IP moved between two instances ten times, a client connecting all along: answered by the new owner each time', async () => {
    // The first owner: A, its failover script having added the address.
    await simA().assignIp('eth1', FLOATING);
    await host(simA(), ['ip', 'address', 'add', `${FLOATING}/32`, 'dev', 'eth1']);
    await eventually('A answers for the floating IP', () => hasRule(simA(), FLOATING), 5000);
    const loop: ConnectLoop = startConnectLoop(simA().net.ns.client, FLOATING, PORT);
    const gaps: Array<{ to: string; unansweredMs: number }> = [];
    try {
      for (let i = 0; i < 10; i++) {
        const [to, from, name] = i % 2 === 0 ? [simB, simA(), 'B'] : [simA(), simB, 'A'];
        // What keepalived's notify script does on the new owner (and the old one's on its way to backup): the
        // AWS call, then the address. IMDS follows 200 ms later on both sides.
        const t0 = Date.now();
        const moved = await to.reassignIp('eth1', FLOATING, { listAfterMs: 200, unlistAfterMs: 200 });
        await Promise.all([
          host(to, ['ip', 'address', 'add', `${FLOATING}/32`, 'dev', 'eth1']),
          host(from, ['ip', 'address', 'del', `${FLOATING}/32`, 'dev', 'eth1']),
        ]);
        await eventually(`move ${i + 1}: ${name} answers`, async () => firstAnswered(loop.attempts(), name, t0) !== undefined, 10_000);
        await Promise.all([moved.listed, moved.unlisted]);
        await eventually(`move ${i + 1}: the rule only on ${name}`, async () => (await hasRule(to, FLOATING)) && !(await hasRule(from, FLOATING)), 10_000);
        expect(await addresses(from, 'eth1')).not.toContain(`${FLOATING}/32`);
        gaps.push({ to: name, unansweredMs: (firstAnswered(loop.attempts(), name, t0)?.start ?? NaN) - t0 });
      }
    } finally {
      await loop.stop();
    }
    const describeSide = (name: string) => gaps.filter((g) => g.to === name).map((g) => g.unansweredMs).join(', ');
    console.log(`failover: unanswered after each move (IMDS 200 ms behind, client every 20 ms): to B ${describeSide('B')} ms; to A ${describeSide('A')} ms`);
    // The last owner is A, and only A answers.
    const last = loop.attempts().filter((a) => a.answer !== null).at(-1);
    expect(last?.answer).toBe('A');
  });
});
