import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readPreviousSnapshot, STATUS_FILE } from '../../src/daemon/status-file';

const eni = {
  mac: '02:00:00:00:01:01', deviceNumber: 1, networkCard: 0, interfaceId: 'eni-0a1b2c', ipv4s: ['10.0.1.20'], ipv4Prefixes: [],
  ipv6s: [], ipv6Prefixes: [], subnetIpv4Cidr: '10.0.1.0/24', subnetIpv6Cidrs: [],
};

describe('the previous daemon\'s IMDS state (restart)', () => {
  const dirs: string[] = [];
  const withFile = (content: string): string => {
    const dir = mkdtempSync(join(tmpdir(), 'ec2netd-status-'));
    dirs.push(dir);
    writeFileSync(join(dir, STATUS_FILE), content);
    return dir;
  };
  afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

  it('is read back whatever became of the process that wrote it, without its held or pending lists', () => {
    const dir = withFile(JSON.stringify({ pid: 2 ** 22 + 1, snapshot: { primaryMac: '02:00:00:00:01:00', enis: [eni], pending: [{ mac: 'x', reason: 'y' }], held: [] } }));
    expect(readPreviousSnapshot(dir)).toEqual({ snapshot: { primaryMac: '02:00:00:00:01:00', enis: [eni], pending: [] } });
  });

  it('no file or no snapshot yet: nothing, and no problem', () => {
    expect(readPreviousSnapshot(join(tmpdir(), 'ec2netd-no-such-dir'))).toEqual({});
    expect(readPreviousSnapshot(withFile(JSON.stringify({ pid: 1, snapshot: null })))).toEqual({});
  });

  it.each([
    ['not JSON', '{"pid": 1, "snap'],
    ['a bad MAC', JSON.stringify({ snapshot: { primaryMac: 'eth0', enis: [] } })],
    ['a bad address', JSON.stringify({ snapshot: { primaryMac: '02:00:00:00:01:00', enis: [{ ...eni, ipv4s: ['10.0.1.20; reboot'] }] } })],
    ['a bad interface id', JSON.stringify({ snapshot: { primaryMac: '02:00:00:00:01:00', enis: [{ ...eni, interfaceId: 'x' }] } })],
    ['a missing field', JSON.stringify({ snapshot: { primaryMac: '02:00:00:00:01:00', enis: [{ ...eni, subnetIpv6Cidrs: undefined }] } })],
  ])('%s: not used, and said why', (_what, content) => {
    const out = readPreviousSnapshot(withFile(content));
    expect(out.snapshot).toBeUndefined();
    expect(out.problem).toMatch(/status\.json.*starting without the previous IMDS state/);
  });
});
