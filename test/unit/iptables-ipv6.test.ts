// The ip6tables side of the container chain, with stand-in iptables commands that log how they are called: nothing
// of IPv6 runs without an IPv6 container network (one ip6tables-save at start), the chain goes to ip6tables-restore
// when one appears, and flush covers both families.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { IptablesAdapter } from '../../src/iptables/apply';

describe('IptablesAdapter and ip6tables', () => {
  const bin = mkdtempSync(path.join(tmpdir(), 'ec2netd-fake-iptables-'));
  const log = path.join(bin, 'calls.log');
  const savedPath = process.env.PATH;
  const commands = ['iptables', 'ip6tables', 'iptables-nft', 'ip6tables-nft', 'iptables-legacy', 'ip6tables-legacy'];
  beforeAll(() => {
    // Every save prints an empty dump; every restore logs its transaction.
    for (const cmd of commands) {
      writeFileSync(path.join(bin, `${cmd}-save`), `#!/bin/sh\necho "${cmd}-save $*" >> ${log}\n`);
      writeFileSync(path.join(bin, `${cmd}-restore`), `#!/bin/sh\necho "${cmd}-restore $*" >> ${log}\nwhile IFS= read -r l; do echo "  $l" >> ${log}; done\n`);
      chmodSync(path.join(bin, `${cmd}-save`), 0o755);
      chmodSync(path.join(bin, `${cmd}-restore`), 0o755);
    }
    process.env.PATH = bin;
  });
  afterAll(() => { process.env.PATH = savedPath; rmSync(bin, { recursive: true, force: true }); });
  beforeEach(() => writeFileSync(log, ''));
  const calls = (): string[] => readFileSync(log, 'utf8').split('\n').filter((l) => l !== '');
  const none = { chain: 'EC2NETD', mask: 0x1f7f, rules: [] };
  const some = { chain: 'EC2NETD', mask: 0x1f7f, rules: [{ kind: 'restore-mark' as const, inIface: 'docker0', mask: 0x1f7f }] };

  it('without an IPv6 container network: one ip6tables-save at start, then nothing', async () => {
    const adapter = new IptablesAdapter({ iptables: { backend: 'nft', chain: 'EC2NETD' } });
    for (let i = 0; i < 3; i++) expect((await adapter.sync(none, 6)).changed).toBe(false);
    expect(calls()).toEqual(['ip6tables-nft-save ']);
  });

  it('an IPv6 container network: the chain goes to ip6tables-restore of the same variant; gone again, it is removed', async () => {
    const adapter = new IptablesAdapter({ iptables: { backend: 'nft', chain: 'EC2NETD' } });
    expect((await adapter.sync(some, 6)).changed).toBe(true);
    expect(calls()).toEqual([
      'ip6tables-nft-save -t mangle',
      'ip6tables-nft-restore -w 5 --noflush',
      '  *mangle', '  :EC2NETD - [0:0]', '  -A EC2NETD -i docker0 -j CONNMARK --restore-mark --nfmask 0x1f7f --ctmask 0x1f7f',
      '  -I PREROUTING 1 -j EC2NETD', '  COMMIT',
    ]);
    writeFileSync(log, '');
    // Nothing wanted any more: ip6tables is read again (the chain may be there), after that it is left alone.
    await adapter.sync(none, 6);
    await adapter.sync(none, 6);
    expect(calls()).toEqual(['ip6tables-nft-save ']);
  });

  it('flush asks both families in every variant', async () => {
    await new IptablesAdapter({ iptables: { backend: 'auto', chain: 'EC2NETD' } }).flush('EC2NETD');
    expect(calls()).toEqual(['iptables-nft-save ', 'iptables-legacy-save ', 'ip6tables-nft-save ', 'ip6tables-legacy-save ']);
  });
});
