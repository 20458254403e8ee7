// A host without iptables (a minimal image, no Docker): nothing wanted means nothing to do and nothing to report;
// something wanted is a clear error naming the missing command.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IptablesAdapter } from '../../src/iptables/apply';

describe('IptablesAdapter without iptables installed', () => {
  const empty = mkdtempSync(path.join(tmpdir(), 'ec2netd-nopath-'));
  const savedPath = process.env.PATH;
  beforeAll(() => { process.env.PATH = empty; });
  afterAll(() => { process.env.PATH = savedPath; rmSync(empty, { recursive: true, force: true }); });
  const adapter = () => new IptablesAdapter({ iptables: { backend: 'auto', chain: 'EC2NETD' } });
  const none = { chain: 'EC2NETD', mask: 0x1f7f, rules: [] };
  const some = { chain: 'EC2NETD', mask: 0x1f7f, rules: [{ kind: 'restore-mark' as const, inIface: 'docker0', mask: 0x1f7f }] };

  it('nothing wanted: sync changes nothing and check says in sync', async () => {
    expect((await adapter().sync(none)).changed).toBe(false);
    expect((await adapter().check(none)).drift.inSync).toBe(true);
  });

  it('something wanted: sync fails with the missing command, check reports drift', async () => {
    await expect(adapter().sync(some)).rejects.toThrow(/iptables-save.*not found/);
    expect((await adapter().check(some)).drift.inSync).toBe(false);
  });
});
