// End to end on a simulated instance with ENIs on two network cards, IMDS's eventual consistency after an
// attach (each way it shows), and delegated IPv4 prefixes as host addresses. Real kernel, real packets, the
// source/destination check enforced. (The simulator puts every card's ENIs on one VPC bridge: network cards
// only change what IMDS says, which is all ec2netd sees of them.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, waitForTcp, type TcpServer } from '../../sim/probe';
import { addresses, eventually, flowPort, ownedRules, routes, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;
const NO_CARD = ['network-card', 'network-card-index'];

describe('ec2netd with ENIs on two network cards, and IMDS catching up after attaches', () => {
  const sim = useSimulatedEc2('e2ecard', {
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.21', '10.0.1.22'], deviceNumber: 1, networkCard: 1 },
      // Device 0 is a legitimate slot on every card but 0.
      { name: 'eth2', ipv4s: ['10.0.1.20'], deviceNumber: 0, networkCard: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: 50, pendingRetryMaxMs: 400 } },
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess;

  const reach = async (ip: string) => (await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok;
  const rulesFor = async (ip: string) => (await ownedRules(sim())).filter((r) => r.includes(`from ${ip} `));
  const logged = (text: string) => eventually(`daemon log: ${text}`, async () => daemon.output().stdout.includes(text));

  beforeAll(async () => {
    for (const ip of ['10.0.1.20', '10.0.1.21', '10.0.1.22', '10.0.1.30', '10.0.1.40', '10.0.1.50']) {
      servers.push(await startTcpServer(sim().net.ns.host, ip, PORT));
    }
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('configures card 1 ENIs in 10000 + 100 * card + device (10101, and 10100 for device 0) and they answer', async () => {
    daemon = sim().startDaemon();
    await eventually('rules for card 1', async () => (await ownedRules(sim())).length === 3);
    expect(await ownedRules(sim())).toEqual([
      '10100 from 10.0.1.20 lookup 10100', '10100 from 10.0.1.21 lookup 10101', '10100 from 10.0.1.22 lookup 10101',
    ]);
    expect(await routes(sim(), 10101)).toEqual([
      expect.objectContaining({ dst: 'default', gateway: '10.0.1.1', dev: 'eth1', protocol: '236' }),
      expect.objectContaining({ dst: '10.0.1.0/24', dev: 'eth1', prefsrc: '10.0.1.21', protocol: '236' }),
    ]);
    expect(await routes(sim(), 10100)).toEqual(expect.arrayContaining([expect.objectContaining({ dst: 'default', dev: 'eth2' })]));
    for (const ip of ['10.0.1.20', '10.0.1.21', '10.0.1.22']) expect(await reach(ip), ip).toBe(true);
    await logged('"ready');
  });

  it('missing network-card on a card 1 ENI: waits (never a guessed card 0 table), then lands in 10102', async () => {
    const mac = '0a:ec:00:00:01:42'; // simMac(0x100 + 1 * 0x40 + 2), sim/ec2.ts's default MAC for card 1, device 2
    await sim().attachEni({ name: 'eth3', ipv4s: ['10.0.1.30'], deviceNumber: 2, networkCard: 1 }, { imds: { hide: NO_CARD } });
    await logged(`waiting for IMDS: ${mac}: network-card absent`);
    // Several retries have run by now (50 ms, doubling to 400 ms): none configured a guess.
    await new Promise((r) => setTimeout(r, 800));
    expect(await rulesFor('10.0.1.30')).toEqual([]);
    expect(await routes(sim(), 10002)).toEqual([]);
    await sim().patchImdsEni('eth3', { hide: [] });
    await eventually('eth3 in 10102', async () => (await rulesFor('10.0.1.30')).length === 1);
    expect(await rulesFor('10.0.1.30')).toEqual(['10100 from 10.0.1.30 lookup 10102']);
    expect(await reach('10.0.1.30')).toBe(true);
  });

  it('device-number 0 on a non-primary MAC of card 0: waits, then is configured in its table', async () => {
    const mac = '0a:ec:00:00:01:03';
    await sim().attachEni({ name: 'eth4', ipv4s: ['10.0.1.40'], deviceNumber: 3 }, { imds: { override: { 'device-number': '0' } } });
    await logged(`waiting for IMDS: ${mac}: device-number reads 0`);
    await new Promise((r) => setTimeout(r, 800));
    expect(await rulesFor('10.0.1.40')).toEqual([]);
    await sim().patchImdsEni('eth4', { override: {} });
    await eventually('eth4 in 10003', async () => (await rulesFor('10.0.1.40')).length === 1);
    expect(await rulesFor('10.0.1.40')).toEqual(['10100 from 10.0.1.40 lookup 10003']);
    expect(await reach('10.0.1.40')).toBe(true);
  });

  it('a listed key that answers 404: waits, then is configured', async () => {
    const mac = '0a:ec:00:00:01:04';
    await sim().attachEni({ name: 'eth5', ipv4s: ['10.0.1.50'], deviceNumber: 4 }, { imds: { hide: ['local-ipv4s', 'subnet-ipv4-cidr-block'] } });
    await logged(`waiting for IMDS: ${mac}: IMDS keys absent: local-ipv4s, subnet-ipv4-cidr-block`);
    await new Promise((r) => setTimeout(r, 800));
    expect(await routes(sim(), 10004)).toEqual([]);
    await sim().patchImdsEni('eth5', { hide: [] });
    await eventually('eth5 in 10004', async () => (await rulesFor('10.0.1.50')).length === 1);
    expect(await routes(sim(), 10004)).toHaveLength(2);
    expect(await reach('10.0.1.50')).toBe(true);
  });

  it('plan after all that exits 0 and says it is in sync', async () => {
    const plan = await sim().ec2netd(['plan']);
    expect(plan.stdout).toContain('in sync');
    expect(plan.code).toBe(0);
  });
});

describe('ec2netd with ipv4PrefixAddresses: the addresses of a delegated prefix on the ENI', () => {
  const sim = useSimulatedEc2('e2epfx', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1, ipv4Prefixes: ['10.0.1.64/28'] },
    ],
    config: { ipv4PrefixAddresses: true },
  });
  let server: TcpServer | undefined;
  let daemon: ManagedProcess | undefined;
  afterAll(async () => {
    await server?.stop();
    await daemon?.stop(5000);
  });

  it('puts the 16 addresses on eth1 as /32s, and one of them answers through eth1', async () => {
    daemon = sim().startDaemon();
    await eventually('prefix addresses', async () => (await addresses(sim(), 'eth1')).length === 17);
    const hosts = Array.from({ length: 16 }, (_, i) => `10.0.1.${64 + i}/32`);
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', ...hosts].sort());
    expect(await ownedRules(sim())).toContain('10100 from 10.0.1.64/28 lookup 10001');
    server = await startTcpServer(sim().net.ns.host, '10.0.1.70', PORT);
    expect((await waitForTcp(sim().net.ns.client, '10.0.1.70', PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok).toBe(true);
    // main still prefers eth0 for the subnet: the /32s add no connected route.
    const { stdout } = await sim().net.exec('host', ['ip', 'route', 'get', '10.0.1.99']);
    expect(stdout).toContain('dev eth0');
  });
});
