// End to end on the simulated instance: real kernel, real packets, the source/destination check enforced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, tcpProbe, waitForTcp, type TcpServer } from '../../sim/probe';
import { addresses, eventually, flowPort, ownedRules, routes, rules, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;

describe('ec2netd on a simulated instance', () => {
  const sim = useSimulatedEc2('e2ecore', {
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10', '10.0.1.11'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1, ipv4Prefixes: ['10.0.1.64/28'] },
    ],
    config: { sync: { pendingRetryBaseMs: 50 } },
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess;

  const reach = async (ip: string) => (await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok;
  const serve = async (ip: string) => { servers.push(await startTcpServer(sim().net.ns.host, ip, PORT)); };

  beforeAll(async () => {
    for (const ip of ['10.0.1.10', '10.0.1.11', '10.0.1.20', '10.0.1.21', '10.0.1.30', '10.0.1.22']) await serve(ip);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('without ec2netd, a reply to a secondary ENI leaves through eth0 and the VPC drops it', async () => {
    // The way a plain DHCP client leaves eth1: address and connected route, no policy routing.
    await sim().net.exec('host', ['ip', 'link', 'set', 'eth1', 'up']);
    await sim().net.exec('host', ['ip', 'address', 'add', '10.0.1.20/24', 'dev', 'eth1', 'metric', '200']);
    // The reply (or, with no neighbour entry yet, the ARP request that carries its source) is dropped.
    const dropped = async () => { const c = await sim().net.dropCounters(); return c.ipv4 + c.arp; };
    const before = await dropped();
    const r = await tcpProbe(sim().net.ns.client, '10.0.1.20', PORT, { timeoutMs: 1000, srcPort: flowPort() });
    expect(r.ok).toBe(false);
    expect(await dropped()).toBeGreaterThan(before);
  });

  it('converges: every private IPv4 of every ENI answers, with the source/destination check enforced', async () => {
    daemon = sim().startDaemon();
    await eventually('rules for eth1', async () => (await ownedRules(sim())).length === 3);
    expect(await ownedRules(sim())).toEqual([
      '10100 from 10.0.1.20 lookup 10001', '10100 from 10.0.1.21 lookup 10001', '10100 from 10.0.1.64/28 lookup 10001',
    ]);
    expect(await routes(sim(), 10001)).toEqual([
      expect.objectContaining({ dst: 'default', gateway: '10.0.1.1', dev: 'eth1', protocol: '236' }),
      expect.objectContaining({ dst: '10.0.1.0/24', dev: 'eth1', prefsrc: '10.0.1.20', protocol: '236', scope: 'link' }),
    ]);
    expect(await addresses(sim(), 'eth0')).toEqual(['10.0.1.10/24', '10.0.1.11/24']);
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', '10.0.1.21/24']);
    for (const ip of ['10.0.1.10', '10.0.1.11', '10.0.1.20', '10.0.1.21']) expect(await reach(ip), ip).toBe(true);
    // The main table still prefers eth0 for the shared subnet.
    const { stdout } = await sim().net.exec('host', ['ip', 'route', 'get', '10.0.1.99']);
    expect(stdout).toContain('dev eth0');
  });

  it('plan right after convergence exits 0 and says it is in sync', async () => {
    const plan = await sim().ec2netd(['plan']);
    expect(plan.stdout).toContain('in sync');
    expect(plan.code).toBe(0);
  });

  it('restores an owned rule that someone else deleted', async () => {
    await sim().net.exec('host', ['ip', 'rule', 'del', 'from', '10.0.1.21', 'lookup', '10001']);
    await eventually('rule restored', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.21 lookup 10001'));
    await sim().net.exec('host', ['ip', 'route', 'flush', 'table', '10001']);
    await eventually('table restored', async () => (await routes(sim(), 10001)).length === 2);
    expect(await reach('10.0.1.21')).toBe(true);
  });

  it('never touches a foreign rule, even one for an ENI address', async () => {
    await sim().net.exec('host', ['ip', 'rule', 'add', 'from', '10.0.1.20', 'lookup', '10001', 'pref', '500']);
    daemon.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 500));
    expect((await rules(sim())).filter((r) => r.priority === 500)).toHaveLength(1);
    await sim().net.exec('host', ['ip', 'rule', 'del', 'pref', '500']);
  });

  it('hot-attach: a new ENI is configured once IMDS describes it, and answers', async () => {
    await sim().attachEni({ name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2 });
    await eventually('eth2 rule', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.30 lookup 10002'));
    expect(await routes(sim(), 10002)).toHaveLength(2);
    expect(await reach('10.0.1.30')).toBe(true);
  });

  it('an ENI whose IMDS data is not consistent yet (device-number 0) waits, then is configured', async () => {
    // Inconsistent from the moment IMDS lists it: the daemon reads a new link's MAC as soon as the kernel
    // announces it, so a patch made after the attach could come too late to be seen.
    await sim().attachEni({ name: 'eth3', ipv4s: ['10.0.1.40'], deviceNumber: 3 }, { imds: { override: { 'device-number': '0' } } });
    await new Promise((r) => setTimeout(r, 600));
    expect((await ownedRules(sim())).filter((r) => r.includes('10.0.1.40'))).toEqual([]);
    await sim().patchImdsEni('eth3', { override: {} });
    await eventually('eth3 rule', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.40 lookup 10003'));
  });

  it('detach: everything of the ENI goes, nothing else', async () => {
    const others = (await ownedRules(sim())).filter((r) => !r.includes('10003'));
    await sim().detachEni('eth3');
    await eventually('eth3 rules gone', async () => !(await ownedRules(sim())).some((r) => r.includes('10003')));
    expect(await ownedRules(sim())).toEqual(others);
    expect(await routes(sim(), 10003)).toEqual([]);
  });

  it('a secondary IP added in IMDS is configured on reload (SIGHUP) and answers', async () => {
    await sim().assignIp('eth1', '10.0.1.22');
    daemon.child.kill('SIGHUP');
    await eventually('10.0.1.22 rule', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.22 lookup 10001'));
    expect(await addresses(sim(), 'eth1')).toContain('10.0.1.22/24');
    expect(await reach('10.0.1.22')).toBe(true);
  });

  it('an IP removed in IMDS loses its address and rule, but the DHCP address is never removed', async () => {
    await sim().unassignIp('eth1', '10.0.1.22');
    daemon.child.kill('SIGHUP');
    await eventually('10.0.1.22 gone', async () => !(await ownedRules(sim())).some((r) => r.includes('10.0.1.22')));
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', '10.0.1.21/24']);
  });

  it('an ENI that IMDS stops listing while its link is still attached keeps its routing', async () => {
    const before = await ownedRules(sim());
    const state = sim().imdsState();
    await sim().imds.setInstance({ ...state, enis: state.enis.filter((e) => e.deviceNumber !== 1) });
    try {
      daemon.child.kill('SIGHUP'); // a reload drops the cached kernel state before it reads IMDS
      await eventually('warned', async () => daemon.output().stdout.includes('IMDS no longer lists'));
      await new Promise((r) => setTimeout(r, 500));
      expect(await ownedRules(sim())).toEqual(before);
      expect(await reach('10.0.1.21')).toBe(true);
    } finally {
      await sim().imds.setInstance(state);
    }
  });

  it('IMDS failing (500) removes nothing, and the daemon keeps repairing', async () => {
    const before = await ownedRules(sim());
    await sim().imds.setFault({ mode: 'status', code: 500 });
    try {
      daemon.child.kill('SIGHUP');
      await new Promise((r) => setTimeout(r, 1500));
      expect(await ownedRules(sim())).toEqual(before);
      await sim().net.exec('host', ['ip', 'rule', 'del', 'from', '10.0.1.20', 'lookup', '10001']);
      await eventually('rule restored while IMDS fails', async () => (await ownedRules(sim())).length === before.length);
      expect(await reach('10.0.1.20')).toBe(true);
      expect(daemon.hasExited()).toBe(false);
    } finally {
      await sim().imds.setFault({ mode: 'ok' });
    }
  });

  it('malformed IMDS values are refused with a clear error and nothing is removed', async () => {
    const before = await ownedRules(sim());
    await sim().patchImdsEni('eth1', { override: { 'local-ipv4s': '10.0.1.20\n10.0.1.21; ip rule flush' } });
    try {
      daemon.child.kill('SIGHUP');
      await eventually('error logged', async () => daemon.output().stdout.includes('local-ipv4s'));
      expect(await ownedRules(sim())).toEqual(before);
    } finally {
      await sim().patchImdsEni('eth1', { override: {} });
    }
  });

  it('a second daemon in the same namespace refuses clearly', async () => {
    const second = sim().startDaemon();
    expect(await second.exited).toBe(1);
    expect(second.output().stderr).toContain('already running');
  });

  it('restart: SIGTERM leaves the routing in place; a new daemon adds no duplicates', async () => {
    const before = await ownedRules(sim());
    await daemon.stop(5000);
    expect(await daemon.exited).toBe(0);
    expect(await ownedRules(sim())).toEqual(before);
    daemon = sim().startDaemon();
    await eventually('ready', async () => daemon.output().stdout.includes('ready'));
    expect(await ownedRules(sim())).toEqual(before);
    expect((await sim().ec2netd(['plan'])).code).toBe(0);
  });

  it('flush removes everything ec2netd owns and nothing else', async () => {
    await daemon.stop(5000);
    await sim().net.exec('host', ['ip', 'rule', 'add', 'from', '10.0.1.99', 'lookup', '10001', 'pref', '600']);
    const flush = await sim().ec2netd(['flush']);
    expect(flush.code).toBe(0);
    expect(await ownedRules(sim())).toEqual([]);
    expect(await routes(sim(), 10001)).toEqual([]);
    expect((await rules(sim())).filter((r) => r.priority === 600)).toHaveLength(1);
    // Addresses ec2netd added are gone; the DHCP one stays.
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24']);
    expect(await addresses(sim(), 'eth0')).toEqual(['10.0.1.10/24']);
  });
});
