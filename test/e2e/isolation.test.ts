// One failure never blocks unrelated work: a change the kernel refuses (an IPv6 address on a link whose IPv6 is
// disabled) is reported once, shown in `status`, retried with backoff, and holds back only the deletions that
// depend on it; another ENI's IP is still removed and another added, and every assigned IP keeps answering.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { startTcpServer, waitForTcp, type TcpServer } from '../../sim/probe';
import { logMark, logSince, waitConverged, waitForLog } from '../helpers/daemon-watch';
import { addresses6, eventually, flowPort, ownedRules, useSimulatedEc2 } from '../helpers/sim';

const PORT = 8080;
const V6 = '2600:1f18:aaaa:bb01::30';

describe('a refused change is isolated', () => {
  const sim = useSimulatedEc2('isolate', {
    subnet6: '2600:1f18:aaaa:bb01::/64',
    hostSysctls: { 'net.ipv4.ip_nonlocal_bind': '1' },
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
      { name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2 },
    ],
    config: { imds: { refreshIntervalMs: 600_000 }, sync: { pendingRetryBaseMs: 50 } },
  });
  const servers: TcpServer[] = [];
  let daemon: ManagedProcess;
  const reach = async (ip: string): Promise<boolean> =>
    (await waitForTcp(sim().net.ns.client, ip, PORT, { srcPort: flowPort(), deadlineMs: 8000 })).ok;

  beforeAll(async () => {
    for (const ip of ['10.0.1.20', '10.0.1.22', '10.0.1.30']) servers.push(await startTcpServer(sim().net.ns.host, ip, PORT));
    daemon = sim().startDaemon();
    await waitConverged(sim());
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it('the kernel refuses eth2\'s IPv6 address: eth1 still loses 10.0.1.21 and gains 10.0.1.22; reported once; applied when possible', async () => {
    expect(await ownedRules(sim())).toContain('10100 from 10.0.1.21 lookup 10001');
    await sim().net.exec('host', ['sysctl', '-q', '-w', 'net.ipv6.conf.eth2.disable_ipv6=1']);
    await sim().assignIp('eth2', V6);
    await sim().unassignIp('eth1', '10.0.1.21');
    await sim().assignIp('eth1', '10.0.1.22');
    const mark = logMark(daemon);
    daemon.child.kill('SIGHUP');
    const failed = await waitForLog(daemon, mark, (l) => l.msg.startsWith(`failed: ip -6 address add ${V6}`), 'the refused add');
    expect(failed.level).toBe(50);

    // Unrelated work went through in spite of the failure.
    await eventually('10.0.1.21 removed and 10.0.1.22 added on eth1', async () => {
      const rules = await ownedRules(sim());
      return !rules.includes('10100 from 10.0.1.21 lookup 10001') && rules.includes('10100 from 10.0.1.22 lookup 10001');
    });
    for (const ip of ['10.0.1.20', '10.0.1.22', '10.0.1.30']) expect(await reach(ip), ip).toBe(true);

    // Retried with backoff, reported once, shown in status while it fails.
    // Several retries happen in 1.5 s (backoff from 50 ms); one line in the journal.
    await new Promise((r) => setTimeout(r, 1500));
    const reports = logSince(daemon, mark).filter((l) => l.msg.startsWith(`failed: ip -6 address add ${V6}`));
    expect(reports).toHaveLength(1);
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain(`failing: ip -6 address add ${V6}/128 dev eth2`);

    // The kernel accepts it again: applied on a retry, without any event or reload.
    const before = logMark(daemon);
    await sim().net.exec('host', ['sysctl', '-q', '-w', 'net.ipv6.conf.eth2.disable_ipv6=0']);
    await waitForLog(daemon, before, (l) => l.msg.startsWith(`now applied after failing: ip -6 address add ${V6}`), 'applied after failing', 15_000);
    expect(await addresses6(sim(), 'eth2')).toContain(`${V6}/128`);
    expect((await sim().ec2netd(['status'])).stdout).not.toContain('failing:');
  });
});
