// Boot with IMDS not answering yet: ec2netd starts, writes nothing, keeps asking with backoff (not only on the
// 60 s refresh), and configures the instance as soon as IMDS answers.
import { afterAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';

describe('boot before IMDS answers', () => {
  const sim = useSimulatedEc2('e2eboot', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    // No link counts as an unknown ENI here, so only the no-snapshot backoff can bring IMDS back in time.
    config: { imds: { attempts: 1 }, eniLinkKinds: ['physical'] },
  });
  let daemon: ManagedProcess | undefined;
  afterAll(async () => { await daemon?.stop(3000); });

  it('writes nothing while IMDS fails, then converges without a signal once it answers', async () => {
    await sim().imds.setFault({ mode: 'status', code: 503 });
    daemon = sim().startDaemon();
    await eventually('the failure is logged', async () => daemon!.output().stdout.includes('HTTP 503'));
    await new Promise((r) => setTimeout(r, 1000));
    expect(await ownedRules(sim())).toEqual([]);
    const status = await sim().ec2netd(['status']);
    expect(status.stdout).toContain('IMDS: failing');
    await sim().imds.setFault({ mode: 'ok' });
    // The refresh interval is 60 s: only the backoff retries can make this within the bound.
    await eventually('eth1 configured', async () => (await ownedRules(sim())).includes('10100 from 10.0.1.20 lookup 10001'), 20_000);
    expect(daemon.hasExited()).toBe(false);
  });
});
