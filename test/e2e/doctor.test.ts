// `ec2netd doctor` on a simulated instance: quiet when healthy, and it finds each problem when planted.
// Everything planted lives in the instance's namespaces or in this file's temporary root
// (config coexistence.root), and is removed by the test that planted it, even when it fails.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManagedProcess } from '../../sim/exec';
import type { Finding } from '../../src/doctor/types';
import { eventually, ownedRules, useSimulatedEc2 } from '../helpers/sim';

const root = mkdtempSync(path.join(tmpdir(), 'ec2netd-doctor-root-'));

function plant(rel: string, text: string): string {
  const file = path.join(root, rel);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

describe('ec2netd doctor on a simulated instance', () => {
  const sim = useSimulatedEc2('e2edoc', {
    enis: [
      { name: 'eth0', ipv4s: ['10.0.1.10'], deviceNumber: 0 },
      { name: 'eth1', ipv4s: ['10.0.1.20', '10.0.1.21'], deviceNumber: 1 },
    ],
    // manageSysctls off: the planted src_valid_mark=0 must stay as planted.
    config: { sync: { pendingRetryBaseMs: 50 }, imds: { timeoutMs: 500 }, containers: { manageSysctls: false }, coexistence: { root } },
  });
  let daemon: ManagedProcess | undefined;
  const host = (argv: string[]) => sim().net.exec('host', argv);

  const doctor = async (): Promise<{ code: number; findings: Finding[] }> => {
    const r = await sim().ec2netd(['doctor', '--json']);
    const doc = JSON.parse(r.stdout) as { findings: Finding[] };
    return { code: r.code, findings: doc.findings };
  };
  const problems = (findings: Finding[]) => findings.filter((f) => f.severity === 'warn' || f.severity === 'error');
  const find = (findings: Finding[], check: string, severity: Finding['severity']) => findings.filter((f) => f.check === check && f.severity === severity);

  beforeAll(async () => {
    daemon = sim().startDaemon();
    await eventually('eth1 configured', async () => (await ownedRules(sim())).length === 2);
  });
  afterAll(async () => {
    await daemon?.stop(3000);
    rmSync(root, { recursive: true, force: true });
  });

  it('is quiet on a healthy, converged instance (exit 0, nothing above info)', async () => {
    const { code, findings } = await doctor();
    expect(problems(findings)).toEqual([]);
    expect(code).toBe(0);
    for (const check of ['daemon', 'imds', 'rp-filter', 'foreign-rules', 'networkd', 'mtu', 'main-routes']) {
      expect(findings.some((f) => f.check === check), check).toBe(true);
    }
  });

  it('text output: one line per finding, severity first', async () => {
    const r = await sim().ec2netd(['doctor']);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) expect(line).toMatch(/^(OK|INFO|WARN|ERROR) +[a-z-]+: /);
  });

  it('strict rp_filter with containers and src_valid_mark=0 is an error (exit 2)', async () => {
    try {
      await host(['ip', 'link', 'add', 'docker0', 'type', 'bridge']);
      await host(['ip', 'address', 'add', '172.17.0.1/16', 'dev', 'docker0']);
      await host(['sysctl', '-q', '-w', 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.conf.all.src_valid_mark=0']);
      const { code, findings } = await doctor();
      expect(find(findings, 'rp-filter', 'error')[0]?.message).toContain('eth1');
      expect(find(findings, 'imds-hop-limit', 'info')).toHaveLength(1);
      expect(code).toBe(2);
      await host(['sysctl', '-q', '-w', 'net.ipv4.conf.all.src_valid_mark=1']);
      expect(find((await doctor()).findings, 'rp-filter', 'error')).toEqual([]);
    } finally {
      await host(['ip', 'link', 'del', 'docker0']).catch(() => undefined);
      await host(['sysctl', '-q', '-w', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.all.src_valid_mark=0']);
    }
  });

  it('a foreign rule that shadows ec2netd\'s for an ENI address is an error', async () => {
    try {
      await host(['ip', 'rule', 'add', 'from', '10.0.1.20', 'lookup', '200', 'pref', '500']);
      const { code, findings } = await doctor();
      const shadow = find(findings, 'foreign-rules', 'error');
      expect(shadow).toHaveLength(1);
      expect(shadow[0]?.message).toContain('from 10.0.1.20/32 lookup 200 pref 500');
      expect(shadow[0]?.fix).toContain('ip rule del');
      expect(code).toBe(2);
    } finally {
      await host(['ip', 'rule', 'del', 'pref', '500']).catch(() => undefined);
    }
  });

  it('systemd-networkd enabled without the ManageForeign settings is a warning; the drop-in fixes it', async () => {
    const files = [
      plant('etc/systemd/networkd.conf', '[Network]\n#ManageForeignRoutingPolicyRules=yes\n'),
      plant('etc/systemd/system/multi-user.target.wants/systemd-networkd.service', '[Unit]\n'),
    ];
    try {
      let r = await doctor();
      expect(find(r.findings, 'networkd', 'warn')[0]?.message).toContain('ManageForeignRoutingPolicyRules and ManageForeignRoutes');
      expect(r.code).toBe(1);
      files.push(plant('etc/systemd/networkd.conf.d/ec2netd.conf', '[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n'));
      r = await doctor();
      expect(find(r.findings, 'networkd', 'ok')).toHaveLength(1);
    } finally {
      rmSync(path.join(root, 'etc'), { recursive: true, force: true });
    }
  });

  it('an ec2-net-utils-style rule set and its runtime files: a second manager, and the ENI left alone', async () => {
    plant('run/systemd/network/70-eth1.network', '[Match]\nMACAddress=02:00:00:00:01:01\n');
    try {
      await host(['ip', 'rule', 'add', 'from', '10.0.1.20', 'lookup', '10001', 'pref', '10001', 'proto', 'static']);
      await host(['ip', 'route', 'add', '10.0.1.0/24', 'dev', 'eth1', 'table', '10001', 'proto', 'static', 'metric', '1024']);
      const { code, findings } = await doctor();
      const managers = find(findings, 'managers', 'warn');
      expect(managers[0]?.message).toContain('amazon-ec2-net-utils is active');
      const verdict = find(findings, 'coexistence', 'warn');
      expect(verdict).toHaveLength(1);
      expect(verdict[0]?.message).toContain('eth1');
      expect(verdict[0]?.message).toContain('amazon-ec2-net-utils');
      expect(code).toBe(1);
    } finally {
      await host(['ip', 'rule', 'del', 'pref', '10001']).catch(() => undefined);
      await host(['ip', 'route', 'del', '10.0.1.0/24', 'table', '10001', 'metric', '1024']).catch(() => undefined);
      rmSync(path.join(root, 'run'), { recursive: true, force: true });
    }
  });

  it('netplan routing-policy is a second manager', async () => {
    plant('etc/netplan/50-cloud-init.yaml', 'network:\n  ethernets:\n    eth1:\n      routing-policy:\n        - from: 10.0.1.20\n          table: 101\n');
    try {
      const { findings } = await doctor();
      expect(find(findings, 'managers', 'warn')[0]?.message).toContain('cloud-init/netplan');
    } finally {
      rmSync(path.join(root, 'etc'), { recursive: true, force: true });
    }
  });

  it('MTU mismatch between ENIs is a warning', async () => {
    try {
      await host(['ip', 'link', 'set', 'eth1', 'mtu', '1400']);
      const { code, findings } = await doctor();
      expect(find(findings, 'mtu', 'warn')[0]?.message).toMatch(/eth0: 1500; eth1: 1400|eth1: 1400; eth0: 1500/);
      expect(code).toBe(1);
    } finally {
      await host(['ip', 'link', 'set', 'eth1', 'mtu', '1500']);
    }
  });

  it('IMDS that hangs, or refuses the token, is an error', async () => {
    try {
      await sim().imds.setFault({ mode: 'hang' });
      let r = await doctor();
      expect(find(r.findings, 'imds', 'error')[0]?.message).toContain('unreachable');
      expect(r.code).toBe(2);
      await sim().imds.setFault({ mode: 'status', code: 403, pathRegex: '^/latest/api/token$' });
      r = await doctor();
      expect(find(r.findings, 'imds', 'error')[0]?.message).toContain('HTTP 403');
      await sim().imds.setFault({ mode: 'status', code: 500 });
      r = await doctor();
      expect(find(r.findings, 'imds', 'error')[0]?.message).toContain('HTTP 500');
    } finally {
      await sim().imds.setFault({ mode: 'ok' });
    }
  });

  it('no daemon running is a warning; doctor wrote nothing (owned rules unchanged)', async () => {
    const before = await ownedRules(sim());
    await daemon?.stop(3000);
    daemon = undefined;
    const { findings } = await doctor();
    expect(find(findings, 'daemon', 'warn')).toHaveLength(1);
    expect(await ownedRules(sim())).toEqual(before);
  });
});
