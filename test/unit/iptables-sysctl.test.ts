import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureContainerSysctls, ensureSysctl, readSysctlRecord, restoreSysctls, SYSCTL_RECORD, sysctlPath } from '../../src/iptables/sysctl';

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

describe('sysctl record (flush gives back what ec2netd changed)', () => {
  const key = 'net.ipv4.conf.all.src_valid_mark';
  const file = (r: string): string => join(r, 'net/ipv4/conf/all/src_valid_mark');

  it('records the admin\'s value before the first change only, and restore writes it back and deletes the record', async () => {
    const r = fakeProc('0');
    const stateDir = join(r, 'state');
    expect(await ensureSysctl(key, '1', { root: r, stateDir })).toEqual({ changed: true, previous: '0' });
    expect(await readSysctlRecord(stateDir)).toEqual({ [key]: '0' });
    // Someone sets 2, ec2netd sets 1 again: the recorded original stays the admin's first value.
    writeFileSync(file(r), '2\n');
    await ensureSysctl(key, '1', { root: r, stateDir });
    expect(await readSysctlRecord(stateDir)).toEqual({ [key]: '0' });
    expect(await restoreSysctls(stateDir, { root: r })).toEqual([{ key, value: '0' }]);
    expect(readFileSync(file(r), 'utf8')).toBe('0\n');
    expect(existsSync(join(stateDir, SYSCTL_RECORD))).toBe(false);
    expect(await restoreSysctls(stateDir, { root: r })).toEqual([]);
  });

  it('records nothing when the value was already right, and restore then changes nothing', async () => {
    const r = fakeProc('1');
    const stateDir = join(r, 'state');
    expect(await ensureSysctl(key, '1', { root: r, stateDir })).toEqual({ changed: false, previous: '1' });
    expect(await readSysctlRecord(stateDir)).toEqual({});
    expect(await restoreSysctls(stateDir, { root: r })).toEqual([]);
    expect(readFileSync(file(r), 'utf8')).toBe('1\n');
  });
});
