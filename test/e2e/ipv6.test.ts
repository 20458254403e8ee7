// End to end over IPv6 on the simulated instance: real kernel, real packets, the source/destination check
// enforced for IPv6 sources, the VPC router learned from its (simulated) router advertisement.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, tcpProbe, waitForTcp, type TcpServer } from '../../sim/probe';
import { addresses6, eventually, flowPort, ownedRules6, routes6, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;
const SUBNET6 = '2600:1f18:aaaa:bb01::/64';
const V6 = (host: string): string => `2600:1f18:aaaa:bb01::${host}`;
const PREFIX6 = '2600:1f18:aaaa:bb01:1234::/80';
const IN_PREFIX = '2600:1f18:aaaa:bb01:1234::5';

describe('ec2netd over IPv6 on a simulated instance', () => {
  const sim = useSimulatedEc2('e2ev6', {
    subnet6: SUBNET6,
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1', 'net.ipv6.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], ipv6s: [V6('10'), V6('11')], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], ipv6s: [V6('20'), V6('21')], ipv6Prefixes: [PREFIX6], deviceNumber: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: 50 } },
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess | undefined;
  const router = (): string => sim().net.routerIp6 ?? '';

  const reach = async (ip: string) => (await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok;
  const serve = async (ip: string) => { servers.push(await startTcpServer(sim().net.ns.host, ip, PORT)); };

  beforeAll(async () => {
    for (const ip of ['10.0.1.20', V6('10'), V6('11'), V6('20'), V6('21'), V6('22'), V6('30'), IN_PREFIX]) await serve(ip);
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('the simulator: the primary ENI has its DHCPv6 address and the router learned from the RA', async () => {
    expect(await addresses6(sim(), 'eth0')).toEqual([`${V6('10')}/128`]);
    expect(await routes6(sim(), 'main')).toEqual(expect.arrayContaining([
      expect.objectContaining({ dst: 'default', gateway: router(), dev: 'eth0', protocol: 'ra', metric: 512 }),
      expect.objectContaining({ dst: SUBNET6, dev: 'eth0', protocol: 'ra', metric: 512 }),
    ]));
    expect(router()).toBe('fe80::ec:2aff:fe00:101');
    expect(await reach(V6('10'))).toBe(true);
  });

  it('without ec2netd, a reply from a secondary ENI\'s IPv6 leaves through eth0 and the VPC drops it', async () => {
    // What DHCPv6 and the RA leave on eth1 without policy routing: the /128, and eth1's routes in main behind eth0's.
    await sim().net.exec('host', ['ip', 'link', 'set', 'eth1', 'up']);
    await sim().net.exec('host', ['ip', '-6', 'address', 'add', `${V6('20')}/128`, 'dev', 'eth1', 'noprefixroute', 'nodad']);
    await eventually('RA on eth1', async () => (await routes6(sim(), 'main')).some((r) => r.dst === 'default' && r.dev === 'eth1'));
    const before = (await sim().net.dropCounters()).ipv6;
    const r = await tcpProbe(sim().net.ns.client, V6('20'), PORT, { timeoutMs: 1000, srcPort: flowPort() });
    expect(r.ok).toBe(false);
    expect((await sim().net.dropCounters()).ipv6).toBeGreaterThan(before);
  });

  it('converges: every IPv6 of every ENI answers, with the source/destination check enforced', async () => {
    daemon = sim().startDaemon();
    await eventually('IPv6 rules for eth1', async () => (await ownedRules6(sim())).length === 3);
    expect(await ownedRules6(sim())).toEqual([
      `10100 from ${PREFIX6} lookup 10001`, `10100 from ${V6('20')} lookup 10001`, `10100 from ${V6('21')} lookup 10001`,
    ]);
    await eventually('IPv6 default route in 10001', async () => (await routes6(sim(), 10001)).length === 2);
    expect(await routes6(sim(), 10001)).toEqual([
      expect.objectContaining({ dst: SUBNET6, dev: 'eth1', protocol: '236', metric: 1024 }),
      expect.objectContaining({ dst: 'default', gateway: router(), dev: 'eth1', protocol: '236', metric: 1024 }),
    ]);
    expect(await addresses6(sim(), 'eth0')).toEqual([`${V6('10')}/128`, `${V6('11')}/128`]);
    expect(await addresses6(sim(), 'eth1')).toEqual([`${V6('20')}/128`, `${V6('21')}/128`]);
    // The delegated prefix is routed (a container or anything else holds its addresses): here, lo.
    await sim().net.exec('host', ['ip', '-6', 'address', 'add', `${IN_PREFIX}/128`, 'dev', 'lo']);
    for (const ip of [V6('10'), V6('11'), V6('20'), V6('21'), IN_PREFIX, '10.0.1.20']) expect(await reach(ip), ip).toBe(true);
  });

  it('adds its IPv6 addresses without DAD (usable at once) and without a prefix route', async () => {
    const { stdout } = await sim().net.exec('host', ['ip', '-6', 'address', 'show', 'dev', 'eth1']);
    const line = stdout.split('\n').find((l) => l.includes(`${V6('21')}/128`)) ?? '';
    expect(line).toContain('nodad');
    expect(line).toContain('noprefixroute');
    expect(line).not.toContain('tentative');
    // No second on-link /64 or /128 route in main for eth1 from ec2netd: main still prefers eth0 for the subnet.
    const { stdout: get } = await sim().net.exec('host', ['ip', '-6', 'route', 'get', V6('99')]);
    expect(get).toContain('dev eth0');
  });

  it('plan right after convergence exits 0 and says it is in sync (IPv6 routes read back with metric 1024)', async () => {
    const plan = await sim().ec2netd(['plan']);
    expect(plan.stdout).toContain('in sync');
    expect(plan.code).toBe(0);
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain(`  ipv6: ${V6('20')} ${V6('21')}  prefixes: ${PREFIX6}`);
    expect(status.stdout).toContain('drift: none');
  });

  it('restores an IPv6 rule and the IPv6 default route that someone else deleted', async () => {
    await sim().net.exec('host', ['ip', '-6', 'rule', 'del', 'from', V6('21'), 'lookup', '10001']);
    await sim().net.exec('host', ['ip', '-6', 'route', 'del', 'default', 'table', '10001']);
    await eventually('restored', async () =>
      (await ownedRules6(sim())).includes(`10100 from ${V6('21')} lookup 10001`) && (await routes6(sim(), 10001)).length === 2);
    expect(await reach(V6('21'))).toBe(true);
  });

  it('an IPv6 assigned later is configured on reload and answers; unassigned, it goes', async () => {
    await sim().assignIp('eth1', V6('22'));
    daemon?.child.kill('SIGHUP');
    await eventually('rule for ::22', async () => (await ownedRules6(sim())).includes(`10100 from ${V6('22')} lookup 10001`));
    expect(await addresses6(sim(), 'eth1')).toContain(`${V6('22')}/128`);
    expect(await reach(V6('22'))).toBe(true);
    await sim().unassignIp('eth1', V6('22'));
    daemon?.child.kill('SIGHUP');
    await eventually('::22 gone', async () => !(await ownedRules6(sim())).some((r) => r.includes(V6('22'))));
    expect(await addresses6(sim(), 'eth1')).toEqual([`${V6('20')}/128`, `${V6('21')}/128`]);
  });

  it('hot-attach: a dual-stack ENI is brought up, learns its router from the RA, and answers over IPv6', async () => {
    await sim().attachEni({ name: 'eth2', ipv4s: ['10.0.1.30'], ipv6s: [V6('30')], deviceNumber: 2 });
    await eventually('IPv6 default route in 10002', async () =>
      (await routes6(sim(), 10002)).some((r) => r.dst === 'default' && r.gateway === router() && r.dev === 'eth2'));
    expect(await ownedRules6(sim())).toContain(`10100 from ${V6('30')} lookup 10002`);
    expect(await reach(V6('30'))).toBe(true);
  });

  it('flush removes every IPv6 object ec2netd owns and nothing else', async () => {
    await daemon?.stop(5000);
    const flush = await sim().ec2netd(['flush']);
    expect(flush.code).toBe(0);
    expect(await ownedRules6(sim())).toEqual([]);
    expect(await routes6(sim(), 10001)).toEqual([]);
    // The DHCPv6 addresses (eth0's ::10 from the simulator, eth1's ::20 added by hand above) stay.
    expect(await addresses6(sim(), 'eth0')).toEqual([`${V6('10')}/128`]);
    expect(await addresses6(sim(), 'eth1')).toEqual([`${V6('20')}/128`]);
    // The router-advertised routes in main are not ec2netd's.
    expect((await routes6(sim(), 'main')).filter((r) => r.protocol === 'ra' && r.dst === 'default').length).toBeGreaterThanOrEqual(2);
  });
});
