// The detection adapter over a temporary root: files and units of ec2-net-utils, netplan, systemd-networkd.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cachedManagers, detectEc2NetUtils, detectNetplan, detectNetworkd, parseNetworkdConf } from '../../src/kernel/foreign';

let root: string;
beforeEach(() => { root = mkdtempSync(path.join(tmpdir(), 'ec2netd-detect-')); });
afterEach(() => { rmSync(root, { recursive: true, force: true }); });

function plant(rel: string, text = ''): void {
  const file = path.join(root, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
}

describe('amazon-ec2-net-utils', () => {
  it('absent on an empty root', () => {
    expect(detectEc2NetUtils(root)).toEqual({ id: 'amazon-ec2-net-utils', installed: false, active: false, evidence: [] });
  });

  it('installed (unit files, networkd file) but not active', () => {
    plant('usr/lib/systemd/system/policy-routes@.service');
    plant('usr/lib/systemd/network/80-ec2.network');
    const m = detectEc2NetUtils(root);
    expect([m.installed, m.active]).toEqual([true, false]);
    expect(m.evidence).toEqual(['/usr/lib/systemd/system/policy-routes@.service', '/usr/lib/systemd/network/80-ec2.network']);
  });

  it('installed: v2\'s refresh unit, v1\'s and ubuntu-ec2net\'s udev rules and scripts are evidence too', () => {
    for (const rel of ['usr/lib/systemd/system/refresh-policy-routes@.service', 'etc/udev/rules.d/53-ec2-network-interfaces.rules', 'etc/network/ec2net-functions']) {
      plant(rel);
      const m = detectEc2NetUtils(root);
      expect([m.installed, m.active, m.evidence]).toEqual([true, false, [`/${rel}`]]);
      rmSync(path.join(root, rel));
    }
  });

  it('active: runtime networkd files, enabled or running units', () => {
    plant('run/systemd/network/70-ens6.network');
    expect(detectEc2NetUtils(root).active).toBe(true);
    rmSync(path.join(root, 'run'), { recursive: true });
    mkdirSync(path.join(root, 'etc/systemd/system/timers.target.wants'), { recursive: true });
    symlinkSync('/usr/lib/systemd/system/refresh-policy-routes@.timer', path.join(root, 'etc/systemd/system/timers.target.wants/refresh-policy-routes@eth1.timer'));
    expect(detectEc2NetUtils(root).evidence).toEqual(['/etc/systemd/system/timers.target.wants/refresh-policy-routes@eth1.timer']);
    plant('run/systemd/units/invocation:policy-routes@eth1.service');
    expect(detectEc2NetUtils(root).evidence).toContain('/run/systemd/units/invocation:policy-routes@eth1.service');
  });
});

describe('netplan', () => {
  it('only files with routing-policy count', () => {
    plant('etc/netplan/50-cloud-init.yaml', 'network:\n  ethernets:\n    eth0:\n      dhcp4: true\n');
    expect(detectNetplan(root).installed).toBe(false);
    plant('etc/netplan/60-multi.yaml', 'network:\n  ethernets:\n    eth1:\n      routing-policy:\n        - from: 10.0.1.20\n          table: 101\n');
    plant('run/systemd/network/10-netplan-eth1.network', '[Match]\nName=eth1\n[RoutingPolicyRule]\nFrom=10.0.1.20\nTable=101\n');
    expect(detectNetplan(root)).toEqual({
      id: 'cloud-init/netplan', installed: true, active: true,
      evidence: ['/etc/netplan/60-multi.yaml (routing-policy)', '/run/systemd/network/10-netplan-eth1.network ([RoutingPolicyRule])'],
    });
  });
});

describe('systemd-networkd', () => {
  it('parses [Network] booleans, later assignments win, other sections ignored', () => {
    expect(parseNetworkdConf('[Network]\nManageForeignRoutes=yes\nManageForeignRoutes = off\n[DHCPv4]\nManageForeignRoutingPolicyRules=no\n'))
      .toEqual({ manageForeignRoutes: false });
  });

  it('absent, then installed with defaults, then drop-ins in name order with /etc masking /usr/lib', () => {
    expect(detectNetworkd(root).state).toBe('absent');
    plant('etc/systemd/networkd.conf', '[Network]\n');
    plant('usr/lib/systemd/system/systemd-networkd.service');
    let n = detectNetworkd(root);
    expect([n.state, n.manageForeignRoutingPolicyRules, n.manageForeignRoutes]).toEqual(['installed', undefined, undefined]);
    plant('usr/lib/systemd/networkd.conf.d/ec2netd.conf', '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n');
    plant('etc/systemd/networkd.conf.d/zz-admin.conf', '[Network]\nManageForeignRoutes=yes\n');
    plant('run/systemd/units/invocation:systemd-networkd.service');
    n = detectNetworkd(root);
    expect(n.files).toEqual(['/etc/systemd/networkd.conf', '/usr/lib/systemd/networkd.conf.d/ec2netd.conf', '/etc/systemd/networkd.conf.d/zz-admin.conf']);
    expect([n.state, n.manageForeignRoutingPolicyRules, n.manageForeignRoutes]).toEqual(['active', false, true]);
    // The same name in /etc masks the packaged drop-in.
    plant('etc/systemd/networkd.conf.d/ec2netd.conf', '[Network]\n');
    expect(detectNetworkd(root).manageForeignRoutingPolicyRules).toBeUndefined();
  });

  it('enabled through a wants symlink', () => {
    plant('etc/systemd/system/multi-user.target.wants/systemd-networkd.service');
    expect(detectNetworkd(root).state).toBe('enabled');
  });
});

describe('cachedManagers', () => {
  it('re-reads after maxAge only', () => {
    const first = cachedManagers(root, 1000, 0);
    plant('run/systemd/network/70-eth1.network');
    expect(cachedManagers(root, 1000, 500)).toBe(first);
    expect(cachedManagers(root, 1000, 1500)[0]?.active).toBe(true);
  });
});
