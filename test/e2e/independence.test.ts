// One failure never blocks unrelated work: an ENI IMDS keeps describing badly is retried with a backoff, and that
// backoff must not delay another ENI's hot attach. Real kernel, simulated IMDS.
import { describe, expect, it } from 'vitest';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';

// The backoff is made long (each retry 60 s away): a new link that waited for its turn would miss the deadline.
const BACKOFF_MS = 60_000;

describe('an ENI waiting for IMDS does not hold up another one', () => {
  const sim = useSimulatedEc2('e2eindep', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: BACKOFF_MS, pendingRetryMaxMs: BACKOFF_MS } },
  });

  it('a hot attach is configured at once while an ENI with missing IMDS keys waits out its backoff', async () => {
    sim().startDaemon();
    await eventually('eth1 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.20 lookup 10001'));
    // eth2's keys are missing: read at once, then its retry is scheduled BACKOFF_MS away.
    await sim().attachEni({ name: 'eth2', ipv4s: ['10.0.1.30'], deviceNumber: 2 }, { imds: { hide: ['local-ipv4s', 'subnet-ipv4-cidr-block'] } });
    await eventually('eth2 waiting', async () => (await sim().ec2netd(['status'])).stdout.includes('waiting: 0a:ec:00:00:01:02'));
    // Listed by IMDS before its link appears (as on EC2, as a rule): its first read finds it.
    await sim().attachEni({ name: 'eth3', ipv4s: ['10.0.1.40'], deviceNumber: 3 }, { imdsFirst: true });
    await eventually('eth3 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.40 lookup 10003'));
    expect((await ownedRules(sim())).filter((r) => r.includes('10.0.1.30'))).toEqual([]);
  });
});
