// Ownership and process hygiene on the simulated instance (issue 9, bullets 5 and 6): flush refuses while a
// daemon runs, flush gives back the sysctls ec2netd changed, signals during start-up, SIGTERM during a sync.
import { describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import { waitConverged } from '../helpers/daemon-watch';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';

const OWNED = ['10100 from 10.0.1.20 lookup 10001'];

describe('ownership and process hygiene', () => {
  const sim = useSimulatedEc2('hygiene', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20'], deviceNumber: 1 },
    ],
    config: { sync: { pendingRetryBaseMs: 50 } },
  });

  const converged = async (): Promise<ManagedProcess> => {
    const daemon = sim().startDaemon();
    await waitConverged(sim());
    return daemon;
  };

  it('flush refuses (exit 75) while a daemon runs, naming its pid; --force flushes anyway; after a stop it flushes', async () => {
    const daemon = await converged();
    try {
      const refused = await sim().ec2netd(['flush']);
      expect(refused.code).toBe(75);
      expect(refused.stderr).toContain(`ec2netd is running in this network namespace (pid ${daemon.pid}): stop it first (systemctl stop ec2netd), or use --force`);
      expect(refused.stdout).toBe('');
      expect(await ownedRules(sim())).toEqual(OWNED);

      const forced = await sim().ec2netd(['flush', '--force']);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.stdout).toContain('ip rule del');
      // The running daemon puts it back: why flush refuses by default.
      await eventually('the daemon restored its rule', async () => JSON.stringify(await ownedRules(sim())) === JSON.stringify(OWNED));
    } finally {
      await daemon.stop(5000);
    }
    expect(await daemon.exited).toBe(0);
    const flush = await sim().ec2netd(['flush']);
    expect(flush.code, flush.stderr).toBe(0);
    expect(await ownedRules(sim())).toEqual([]);
  });
});
