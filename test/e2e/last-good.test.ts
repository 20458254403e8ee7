// The contract at packet level: an ENI that IMDS reads incompletely, inconsistently or malformed keeps the routing
// of its last consistent read (and keeps answering), while every other ENI, and every part of the same ENI that IMDS
// states consistently, goes on being reconciled. An address IMDS lists on two ENIs has one owner.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, waitForTcp, type TcpServer } from '../../sim/probe';
import { logMark, logSince, waitConverged, waitForLog, type LogLine } from '../helpers/daemon-watch';
import { addresses, eventually, flowPort, ownedRules, routes, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;

describe('last good state per ENI, one owner per address', () => {
  const sim = useSimulatedEc2('lastgood', {
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
      { name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2, ipv4Prefixes: ['10.0.1.48/28'] },
    ],
    config: { imds: { refreshIntervalMs: 600_000 }, sync: { pendingRetryBaseMs: 50 } },
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess;
  const reach = async (ip: string): Promise<boolean> =>
    (await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok;
  /**
   * SIGHUP (a fresh whole read) and wait for the log line `match` after `mark`. Take the mark before changing IMDS:
   * the daemon may read it before the SIGHUP (a retry of an ENI it was following, an address event), and says
   * each cause once.
   */
  const reload = async (match: (l: LogLine) => boolean, what: string, mark = logMark(daemon)): Promise<LogLine> => {
    daemon.child.kill('SIGHUP');
    return waitForLog(daemon, mark, match, what, 10_000);
  };
  const eth1Id = (): string => sim().imdsState().enis.find((e) => e.deviceNumber === 1)?.interfaceId ?? '';
  const eth2Id = (): string => sim().imdsState().enis.find((e) => e.deviceNumber === 2)?.interfaceId ?? '';

  beforeAll(async () => {
    for (const ip of ['10.0.1.10', '10.0.1.20', '10.0.1.21', '10.0.1.22', '10.0.1.30', '10.0.1.31']) {
      servers.push(await startTcpServer(sim().net.ns.host, ip, PORT));
    }
    daemon = sim().startDaemon();
    await waitConverged(sim());
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('converges', async () => {
    expect(await ownedRules(sim())).toEqual([
      '10100 from 10.0.1.20 lookup 10001', '10100 from 10.0.1.21 lookup 10001', '10100 from 10.0.1.30 lookup 10002',
      '10100 from 10.0.1.48/28 lookup 10002',
    ]);
    for (const ip of ['10.0.1.20', '10.0.1.21', '10.0.1.30']) expect(await reach(ip), ip).toBe(true);
  });

  it('a 404 on one key of eth1 holds eth1 (it keeps answering) while eth2 takes a new IP from the same read', async () => {
    const mark = logMark(daemon);
    await sim().patchImdsEni('eth1', { hide: ['subnet-ipv4-cidr-block'] });
    await sim().assignIp('eth2', '10.0.1.31');
    const line = await reload((l) => l.msg.includes('held on its last good IMDS read'), 'eth1 held', mark);
    expect(line.msg).toBe(`${eth1Id()}: IPv4 configuration held on its last good IMDS read: IMDS key absent: subnet-ipv4-cidr-block`);
    await eventually('10.0.1.31 configured on eth2', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.31 lookup 10002'));
    expect(await ownedRules(sim())).toContain('10100 from 10.0.1.20 lookup 10001');
    expect(await routes(sim(), 10001)).toHaveLength(2);
    for (const ip of ['10.0.1.20', '10.0.1.21', '10.0.1.31']) expect(await reach(ip), ip).toBe(true);
    // `status` says which ENI is held and why, from the daemon's view.
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain(`held: ${eth1Id()}: IPv4 configuration held on its last good IMDS read: IMDS key absent: subnet-ipv4-cidr-block`);
    expect(status.stdout).toMatch(/daemon: running \(pid \d+\)/);
    // Once IMDS is whole again: said once, nothing changes.
    const mark2 = logMark(daemon);
    await sim().patchImdsEni('eth1', { hide: [] });
    await reload((l) => l.msg.includes('IMDS is consistent again'), 'eth1 consistent', mark2);
    expect(await routes(sim(), 10001)).toHaveLength(2);
  });

  it('a delegated prefix whose key and listing disagree stays routed; it goes once both say it is gone', async () => {
    const prefixRule = '10100 from 10.0.1.48/28 lookup 10002';
    // The ENI's listing names ipv4-prefix, the key answers 404.
    let mark = logMark(daemon);
    await sim().patchImdsEni('eth2', { hide: ['ipv4-prefix'] });
    let line = await reload((l) => l.msg.includes('held on its last good IMDS read'), 'eth2 held (404)', mark);
    expect(line.msg).toBe(`${eth2Id()}: IPv4 configuration held on its last good IMDS read: ipv4-prefix is listed but absent (HTTP 404) (IMDS not yet consistent)`);
    expect(await ownedRules(sim())).toContain(prefixRule);
    // The listing stops naming it while the key still answers.
    mark = logMark(daemon);
    await sim().patchImdsEni('eth2', { hide: [], unlisted: ['ipv4-prefix'] });
    line = await reload((l) => l.msg.includes('held on its last good IMDS read'), 'eth2 held (unlisted)', mark);
    expect(line.msg).toBe(`${eth2Id()}: IPv4 configuration held on its last good IMDS read: ipv4-prefix answers but the ENI's listing omits it (IMDS not yet consistent)`);
    expect(await ownedRules(sim())).toContain(prefixRule);
    expect(await reach('10.0.1.30')).toBe(true);
    // Both agree: the prefix is unassigned, and its rule goes.
    mark = logMark(daemon);
    await sim().patchImdsEni('eth2', { unlisted: [], ipv4Prefixes: [] });
    await reload((l) => l.msg.includes('IMDS is consistent again'), 'eth2 consistent', mark);
    await eventually('the prefix rule removed', async () => !(await ownedRules(sim())).includes(prefixRule));
    expect(await ownedRules(sim())).toContain('10100 from 10.0.1.30 lookup 10002');
  });

  it('IPv6 listed before its subnet: eth1 keeps answering over IPv4, and a consistent IPv4 change still applies', async () => {
    const mark = logMark(daemon);
    await sim().patchImdsEni('eth1', { ipv6s: ['2600:1f18:0:1::20'], subnetIpv6Cidrs: [] });
    await sim().unassignIp('eth1', '10.0.1.21');
    await reload((l) => l.msg.includes('not configured until IMDS is consistent'), 'eth1 IPv6 waits', mark);
    await eventually('10.0.1.21 removed', async () => !(await ownedRules(sim())).includes('10100 from 10.0.1.21 lookup 10001'));
    expect(await ownedRules(sim())).toContain('10100 from 10.0.1.20 lookup 10001');
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24']);
    expect(await reach('10.0.1.20')).toBe(true);
    await sim().patchImdsEni('eth1', { ipv6s: [] });
  });

  it('a malformed value in eth2 only: eth2 is held (and named), eth1 takes its new IP', async () => {
    const mark = logMark(daemon);
    await sim().patchImdsEni('eth2', { override: { 'interface-id': 'eni-2; ip rule flush' } });
    await sim().assignIp('eth1', '10.0.1.22');
    const line = await reload((l) => l.msg.includes('held on its last good IMDS read'), 'eth2 held', mark);
    expect(line.msg).toContain(`${eth2Id()}: configuration held on its last good IMDS read: IMDS /latest/meta-data/network/interfaces/macs/`);
    expect(line.msg).toContain('interface-id: not an ENI id (eni-<hex>): "eni-2; ip rule flush"');
    await eventually('10.0.1.22 on eth1', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.22 lookup 10001'));
    for (const ip of ['10.0.1.22', '10.0.1.30', '10.0.1.31']) expect(await reach(ip), ip).toBe(true);
    const mark2 = logMark(daemon);
    await sim().patchImdsEni('eth2', { override: {} });
    await reload((l) => l.msg.includes('IMDS is consistent again'), 'eth2 consistent', mark2);
  });

  it('an IP listed on two ENIs stays where it is, with one rule and one warning naming both; it moves once IMDS settles', async () => {
    const mark = logMark(daemon);
    // Mid-move, IMDS lists 10.0.1.22 on eth1 (where it is) and on eth2 (where it is going).
    await sim().patchImdsEni('eth2', { ipv4s: ['10.0.1.30', '10.0.1.31', '10.0.1.22'] });
    await reload((l) => l.msg.includes('is listed by IMDS on both'), 'contested warning', mark);
    daemon.child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 300));
    const warnings = logSince(daemon, mark).filter((l) => l.msg.includes('is listed by IMDS on both'));
    expect(warnings.map((l) => l.msg)).toEqual([
      `10.0.1.22 is listed by IMDS on both ${eth1Id()} (eth1) and ${eth2Id()} (eth2): kept on eth1, where it is configured, until IMDS agrees with itself`,
    ]);
    expect((await ownedRules(sim())).filter((r) => r.includes('10.0.1.22'))).toEqual(['10100 from 10.0.1.22 lookup 10001']);
    expect(await reach('10.0.1.22')).toBe(true);
    // IMDS settles on eth2, and the VPC moves the IP: within one refresh it answers through eth2.
    await sim().unassignIp('eth1', '10.0.1.22');
    await sim().net.assignIp('eth2', '10.0.1.22');
    daemon.child.kill('SIGHUP');
    await eventually('10.0.1.22 on eth2', async () =>
      (await ownedRules(sim())).filter((r) => r.includes('10.0.1.22')).join() === '10100 from 10.0.1.22 lookup 10002');
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24']);
    expect(await reach('10.0.1.22')).toBe(true);
  });

  it('a restart while IMDS reads eth1 incompletely: eth1 keeps the routing the previous daemon configured', async () => {
    await daemon.stop();
    await sim().patchImdsEni('eth1', { hide: ['local-ipv4s', 'subnet-ipv4-cidr-block'] });
    const before = await ownedRules(sim());
    expect(before).toContain('10100 from 10.0.1.20 lookup 10001');
    daemon = sim().startDaemon();
    const line = await waitForLog(daemon, 0, (l) => l.msg.includes('held on its last good IMDS read'), 'eth1 held after the restart');
    expect(line.msg).toContain(`${eth1Id()}: IPv4 configuration held on its last good IMDS read`);
    await waitConverged(sim());
    expect(await ownedRules(sim())).toEqual(before);
    expect(await routes(sim(), 10001)).toHaveLength(2);
    expect(await reach('10.0.1.20')).toBe(true);
    await sim().patchImdsEni('eth1', { hide: [] });
  });
});
