import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureContainerSysctls, ensureSysctl, sysctlPath } from '../../src/iptables/sysctl';

let root = '';
afterEach(() => rmSync(root, { recursive: true, force: true }));

function fakeProc(value: string): string {
  root = mkdtempSync(join(tmpdir(), 'ec2netd-sysctl-'));
  mkdirSync(join(root, 'net/ipv4/conf/all'), { recursive: true });
  writeFileSync(join(root, 'net/ipv4/conf/all/src_valid_mark'), `${value}\n`);
  return root;
}

describe('sysctl', () => {
  it('writes only when the value differs', async () => {
    const r = fakeProc('0');
    expect(await ensureSysctl('net.ipv4.conf.all.src_valid_mark', '1', { root: r })).toEqual({ changed: true, previous: '0' });
    expect(readFileSync(join(r, 'net/ipv4/conf/all/src_valid_mark'), 'utf8')).toBe('1\n');
    expect(await ensureSysctl('net.ipv4.conf.all.src_valid_mark', '1', { root: r })).toEqual({ changed: false, previous: '1' });
  });

  it('does nothing when containers are off or sysctls are not managed', async () => {
    const r = fakeProc('0');
    expect(await ensureContainerSysctls({ enabled: false, manageSysctls: true }, { root: r })).toEqual({ changed: false });
    expect(await ensureContainerSysctls({ enabled: true, manageSysctls: false }, { root: r })).toEqual({ changed: false });
    expect(await ensureContainerSysctls({ enabled: true, manageSysctls: true }, { root: r })).toEqual({ changed: true, previous: '0' });
  });

  it('refuses keys that could leave the tree', () => {
    expect(() => sysctlPath('net.ipv4.conf.../x')).toThrow();
    expect(() => sysctlPath('net..x')).toThrow();
    expect(sysctlPath('net.ipv4.conf.eth1.rp_filter')).toBe('/proc/sys/net/ipv4/conf/eth1/rp_filter');
  });
});
