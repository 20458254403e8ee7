// Ownership hygiene: ec2netd owns only what it added. An address whose add found it already there (EEXIST: a DHCP
// client or an administrator won the race between ec2netd's read and its write) is never recorded as ec2netd's,
// so a later change can never delete it.
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { runInNs } from '../helpers/netns';
import { addresses, useSimulatedEc2 } from '../helpers/sim';

const RACE_TOOL = path.join(__dirname, '..', 'helpers', 'race-tool.ts');

describe('ownership of addresses', () => {
  const sim = useSimulatedEc2('owner', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21', '10.0.1.22'], deviceNumber: 1 },
    ],
  });

  it('an address someone else added between the read and the add (EEXIST) is not claimed, and survives its unassignment', async () => {
    const { stdout } = await runInNs(sim().net.ns.host, RACE_TOOL, [sim().configPath, 'eth1', '10.0.1.21/24']);
    const out = JSON.parse(stdout) as { planned: number; errors: string[]; owned: string[] };
    expect(out.errors).toEqual([]);
    const mac = sim().imdsState().enis.find((e) => e.deviceNumber === 1)?.mac ?? '';
    // 10.0.1.20 and 10.0.1.22 were added by ec2netd; 10.0.1.21 was there when its add ran.
    expect(out.owned.sort()).toEqual([`${mac}|10.0.1.20`, `${mac}|10.0.1.22`]);
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', '10.0.1.21/24', '10.0.1.22/24']);

    // IMDS stops listing both secondaries: ec2netd removes the one it added, never the other.
    await sim().patchImdsEni('eth1', { ipv4s: ['10.0.1.20'] });
    const sync = await sim().ec2netd(['sync']);
    expect(sync.code, sync.stderr).toBe(0);
    expect(await addresses(sim(), 'eth1')).toEqual(['10.0.1.20/24', '10.0.1.21/24']);
  });
});
