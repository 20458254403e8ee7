// IMDS changes that send no kernel event (a secondary IP assigned or removed) are found by the periodic refresh.
import { afterAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { addresses, eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';

describe('periodic IMDS refresh', () => {
  const sim = useSimulatedEc2('e2erefr', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    config: { imds: { refreshIntervalMs: 1000, refreshJitter: 0.2 } },
  });
  let daemon: ManagedProcess | undefined;
  afterAll(async () => { await daemon?.stop(3000); });

  it('picks up an assigned and an unassigned secondary IP without any signal', async () => {
    daemon = sim().startDaemon();
    await eventually('eth1 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.20 lookup 10001'));
    await sim().assignIp('eth1', '10.0.1.25');
    await eventually('10.0.1.25 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.25 lookup 10001'));
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', '10.0.1.25/24']);
    await sim().unassignIp('eth1', '10.0.1.25');
    await eventually('10.0.1.25 removed', async () => !(await ownedRules(sim())).includes('10100 from 10.0.1.25 lookup 10001'));
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24']);
  });

  it('reads the token once for many refreshes (IMDSv2, no IMDSv1)', async () => {
    const stats = await sim().imds.stats();
    expect(stats.tokenPuts).toBe(1);
    expect(stats.unauthorized).toBe(0);
    expect(stats.requests).toBeGreaterThan(10);
  });
});
