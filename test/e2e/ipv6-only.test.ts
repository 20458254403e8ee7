// End to end on an IPv6-only instance: two ENIs in an IPv6-only subnet (IMDS serves no IPv4 key, and is reached at
// its IPv6 endpoint), the VPC router learned from its (simulated) router advertisement, the source/destination check
// enforced for IPv6 sources. A client reaches the secondary ENI's IPv6 and is answered through that ENI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, tcpProbe, waitForTcp, type TcpServer } from '../../sim/probe';
import { addresses, addresses6, eventually, flowPort, ownedRules, ownedRules6, routes, routes6, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;
const SUBNET6 = '2600:1f16:67f:f201::/64';
const V6 = (host: string): string => `2600:1f16:67f:f201::${host}`;

describe('ec2netd on an IPv6-only instance', () => {
  const sim = useSimulatedEc2('e2ev6only', {
    subnet6: SUBNET6,
    hostSysctls: { 'net.ipv6.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: [], ipv6s: [V6('10')], deviceNumber: 0 },
      { name: 'eth1', ipv4s: [], ipv6s: [V6('20')], deviceNumber: 1 },
    ],
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess | undefined;

  beforeAll(async () => {
    for (const ip of [V6('10'), V6('20')]) servers.push(await startTcpServer(sim().net.ns.host, ip, PORT));
  });
  afterAll(async () => {
    await daemon?.stop(5000);
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('the simulator serves IMDS without IPv4 keys, on its IPv6 endpoint', async () => {
    const state = sim().imdsState();
    expect(state.enis.map((e) => [e.ipv4s, e.subnetIpv4Cidr])).toEqual([[[], ''], [[], '']]);
    const { stdout } = await sim().net.exec('host', ['ip', '-6', 'route', 'get', sim().net.imdsIp6 ?? '']);
    expect(stdout).toContain('dev eth0');
    expect(await addresses(sim(), 'eth0')).toEqual([]);
  });

  it('without ec2netd, the secondary ENI\'s IPv6 is answered out of eth0 and the VPC drops it', async () => {
    await sim().net.exec('host', ['ip', 'link', 'set', 'eth1', 'up']);
    await sim().net.exec('host', ['ip', '-6', 'address', 'add', `${V6('20')}/128`, 'dev', 'eth1', 'noprefixroute', 'nodad']);
    await eventually('RA on eth1', async () => (await routes6(sim(), 'main')).some((r) => r.dst === 'default' && r.dev === 'eth1'));
    const before = (await sim().net.dropCounters()).ipv6;
    // Every attempt fails; under load the first SYN may still wait for neighbour discovery, so a few attempts
    // (bounded) until the VPC has counted the dropped reply.
    for (let attempt = 0; attempt < 5 && (await sim().net.dropCounters()).ipv6 === before; attempt++) {
      expect((await tcpProbe(sim().net.ns.client, V6('20'), PORT, { timeoutMs: 1000, srcPort: flowPort() })).ok).toBe(false);
    }
    expect((await sim().net.dropCounters()).ipv6).toBeGreaterThan(before);
  });

  it('configures both ENIs as complete IPv6-only ENIs; the client reaches eth1\'s IPv6, answered through eth1', async () => {
    daemon = sim().startDaemon();
    await eventually('IPv6 default route in 10001', async () =>
      (await routes6(sim(), 10001)).some((r) => r.dst === 'default' && r.gateway === sim().net.routerIp6 && r.dev === 'eth1'));
    expect(await ownedRules6(sim())).toEqual([`10100 from ${V6('20')} lookup 10001`]);
    expect(await routes6(sim(), 10001)).toEqual([
      expect.objectContaining({ dst: SUBNET6, dev: 'eth1', protocol: '236' }),
      expect.objectContaining({ dst: 'default', gateway: sim().net.routerIp6, dev: 'eth1', protocol: '236' }),
    ]);
    // No IPv4 object at all.
    expect(await ownedRules(sim())).toEqual([]);
    expect(await routes(sim(), 10001)).toEqual([]);
    expect(await addresses6(sim(), 'eth1')).toEqual([`${V6('20')}/128`]);
    const before = (await sim().net.dropCounters()).ipv6;
    for (const ip of [V6('20'), V6('10')]) {
      expect((await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok, ip).toBe(true);
    }
    // Answered through eth1: a reply from ::20 out of eth0 would have been dropped by the source/destination check.
    expect((await sim().net.dropCounters()).ipv6).toBe(before);
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain(`  ipv6: ${V6('20')}`);
    expect(status.stdout).not.toContain('waiting:');
    expect(status.stdout).not.toContain('ipv4:');
  });

  it('hot-attach: an IPv6-only ENI listed first without its subnet waits, then is configured in its table and answers', async () => {
    servers.push(await startTcpServer(sim().net.ns.host, V6('30'), PORT));
    await sim().attachEni({ name: 'eth2', ipv4s: [], ipv6s: [V6('30')], deviceNumber: 2 }, { imds: { hide: ['subnet-ipv6-cidr-blocks'] } });
    await eventually('eth2 waiting', async () => (await sim().ec2netd(['status'])).stdout.includes('subnet-ipv6-cidr-blocks is listed but absent (HTTP 404)'));
    expect(await routes6(sim(), 10002)).toEqual([]);
    await sim().patchImdsEni('eth2', { hide: [] });
    await eventually('IPv6 default route in 10002', async () =>
      (await routes6(sim(), 10002)).some((r) => r.dst === 'default' && r.gateway === sim().net.routerIp6 && r.dev === 'eth2'));
    expect(await ownedRules6(sim())).toContain(`10100 from ${V6('30')} lookup 10002`);
    expect((await waitForTcp(sim().net.ns.client, V6('30'), PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok).toBe(true);
  });

  it('plan is in sync; doctor is quiet, and finds accept_ra off on eth1 once its router is gone', async () => {
    const plan = await sim().ec2netd(['plan']);
    expect(plan.code, plan.stdout).toBe(0);
    const doctor = async (): Promise<Array<{ check: string; severity: string; message: string }>> =>
      (JSON.parse((await sim().ec2netd(['doctor', '--json'])).stdout) as { findings: Array<{ check: string; severity: string; message: string }> }).findings;
    const before = await doctor();
    expect(before.filter((f) => f.severity === 'warn' || f.severity === 'error')).toEqual([]);
    expect(before).toEqual(expect.arrayContaining([expect.objectContaining({ check: 'ra-routes', severity: 'ok' }), expect.objectContaining({ check: 'accept-ra', severity: 'ok' })]));
    // IPv6 forwarding on (as Docker with IPv6 does) and the RA route expired: eth1's table can no longer learn its router.
    await sim().net.exec('host', ['sysctl', '-q', '-w', 'net.ipv6.conf.eth1.forwarding=1']);
    await sim().net.exec('host', ['ip', '-6', 'route', 'del', 'default', 'dev', 'eth1', 'proto', 'ra']);
    const after = (await doctor()).filter((f) => f.check === 'accept-ra');
    expect(after).toEqual([expect.objectContaining({ severity: 'error', message: expect.stringContaining('net.ipv6.conf.eth1.accept_ra=1 with forwarding=1') })]);
  });
});
