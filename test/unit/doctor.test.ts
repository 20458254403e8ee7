// Every doctor check: facts in, findings out.
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildDesired } from '../../src/core/desired';
import type { EniInfo, ImdsSnapshot, KernelLink, KernelRoute, KernelRule, KernelState } from '../../src/core/types';
import {
  checkArp, checkDaemon, checkForeign, checkImds, checkIptables, checkManagers, checkMainRoutes, checkMtu, checkNetworkd,
  checkRpFilter, exitCode, renderText, runChecks, worst,
} from '../../src/doctor/checks';
import { desiredFromKernel } from '../../src/doctor/collect';
import type { DoctorFacts, Finding } from '../../src/doctor/types';

const config = defaultConfig({});
const eth0: KernelLink = { index: 2, name: 'eth0', mac: '02:00:00:00:00:10', up: true };
const eth1: KernelLink = { index: 3, name: 'eth1', mac: '02:00:00:00:00:20', up: true };
const docker0: KernelLink = { index: 9, name: 'docker0', mac: '02:42:00:00:00:01', up: true, kind: 'bridge' };

function eni(mac: string, dev: number, ips: string[]): EniInfo {
  return { mac, deviceNumber: dev, networkCard: 0, interfaceId: `eni-${dev}`, ipv4s: ips, ipv4Prefixes: [], ipv6s: [], ipv6Prefixes: [], subnetIpv4Cidr: '10.0.1.0/24', subnetIpv6Cidrs: [] };
}
const snapshot: ImdsSnapshot = { primaryMac: eth0.mac, enis: [eni(eth0.mac, 0, ['10.0.1.10']), eni(eth1.mac, 1, ['10.0.1.20'])], pending: [] };
const connected = (ifindex: number, metric?: number): KernelRoute =>
  ({ family: 4, table: 254, dst: '10.0.1.0/24', ifindex, protocol: 2, scope: 253, type: 1, ...(metric === undefined ? {} : { metric }) });
const mainDefault: KernelRoute = { family: 4, table: 254, dst: '0.0.0.0/0', gateway: '10.0.1.1', ifindex: 2, protocol: 16, scope: 0, type: 1, metric: 100 };

/** A healthy, converged instance: the kernel holds exactly what ec2netd wants. */
function healthy(): DoctorFacts {
  const base: KernelState = { links: [eth0, eth1], addresses: [], routes: [mainDefault, connected(2, 100)], rules: [] };
  const desired = buildDesired(snapshot, base, config);
  const kernel: KernelState = { ...base, routes: [...base.routes, ...desired.routes], rules: [...desired.rules] };
  return {
    config, kernel, desired, snapshot,
    mtu: { eth0: 9001, eth1: 9001 },
    sysctl: { 'all.rp_filter': 0, 'default.rp_filter': 0, 'eth0.rp_filter': 2, 'eth1.rp_filter': 2, 'all.src_valid_mark': 0, 'all.arp_ignore': 1, 'all.arp_announce': 2 },
    imds: { token: 'ok' },
    iptables: { nft: { dockerChains: false, ourChain: false }, legacy: { dockerChains: false, ourChain: false } },
    networkd: { state: 'absent', files: [], evidence: [] },
    managers: [{ id: 'amazon-ec2-net-utils', installed: false, active: false, evidence: [] }, { id: 'cloud-init/netplan', installed: false, active: false, evidence: [] }],
    daemonRunning: true,
  };
}
const bad = (fs: Finding[]) => fs.filter((f) => f.severity === 'warn' || f.severity === 'error');
const sev = (fs: Finding[]) => fs.map((f) => f.severity);

describe('a healthy instance', () => {
  it('gives no warning or error, and exit code 0', () => {
    const findings = runChecks(healthy());
    expect(bad(findings)).toEqual([]);
    expect(exitCode(findings)).toBe(0);
  });
});

describe('a kernel that refuses a dump (qemu-user has no FIB rule dumps)', () => {
  it('says so as an error and skips the checks that read the kernel, instead of judging a partial view', () => {
    const facts = { ...healthy(), kernel: { ...healthy().kernel, rules: [] }, unreadable: ['dump IPv4 rules: ETIMEDOUT'] };
    const findings = runChecks(facts);
    expect(findings[0]).toMatchObject({ check: 'kernel', severity: 'error' });
    expect(findings[0]?.message).toContain('dump IPv4 rules: ETIMEDOUT');
    const checks = new Set(findings.map((f) => f.check));
    const healthyChecks = new Set(runChecks(healthy()).map((f) => f.check));
    // The rule-less view would have been judged as if the rules were missing by these; they are not run.
    for (const skipped of ['rp-filter', 'foreign-rules', 'main-routes', 'mtu', 'arp']) {
      expect(healthyChecks.has(skipped), `${skipped} reports on a healthy instance`).toBe(true);
      expect(checks.has(skipped), skipped).toBe(false);
    }
    expect(checks.has('daemon')).toBe(true);
    expect(checks.has('imds')).toBe(true);
    expect(exitCode(findings)).toBe(2);
  });
});

describe('exit code and rendering', () => {
  it('0 for ok/info, 1 for warn, 2 for error', () => {
    const f = (severity: Finding['severity']): Finding => ({ check: 'x', severity, message: 'm', fix: 'do' });
    expect([exitCode([f('ok'), f('info')]), exitCode([f('info'), f('warn')]), exitCode([f('warn'), f('error'), f('ok')])]).toEqual([0, 1, 2]);
    expect(worst([])).toBe('ok');
    expect(renderText([f('error'), f('ok')])).toBe('ERROR x: m. Fix: do\nOK    x: m');
  });
});

describe('daemon', () => {
  it('warns when no daemon holds the instance socket', () => {
    expect(sev(checkDaemon({ daemonRunning: true }))).toEqual(['ok']);
    expect(checkDaemon({ daemonRunning: false })[0]).toMatchObject({ severity: 'warn', fix: expect.stringContaining('systemctl enable --now ec2netd') });
  });
});

describe('imds', () => {
  const facts = healthy();
  it('ok, failing reads, refused token, IMDSv1-only path, unreachable', () => {
    expect(sev(checkImds(facts))).toEqual(['ok']);
    expect(checkImds({ ...facts, imds: { token: 'ok', snapshotError: 'HTTP 500' } })[0]?.severity).toBe('error');
    const refused = checkImds({ ...facts, imds: { token: 'http', status: 403, v1: false } })[0];
    expect(refused?.message).toContain('HTTP 403 (403: the metadata endpoint is disabled');
    const v1 = checkImds({ ...facts, imds: { token: 'http', status: 405, v1: true } })[0];
    expect(v1?.message).toContain('IMDSv1 (no token) answers');
    expect(v1?.fix).toContain('let PUT requests');
    const down = checkImds({ ...facts, imds: { token: 'unreachable', reason: 'no answer within 1000 ms', v1: false } })[0];
    expect(down).toMatchObject({ severity: 'error', message: expect.stringContaining('unreachable from the host: no answer within 1000 ms') });
    expect(down?.fix).toContain('ip route get 169.254.169.254');
  });

  it('explains the hop limit when containers are in use', () => {
    const f = healthy();
    const withBridge = { ...f, kernel: { ...f.kernel, links: [...f.kernel.links, docker0] } };
    expect(checkImds(withBridge).find((x) => x.check === 'imds-hop-limit')).toMatchObject({ severity: 'info', fix: expect.stringContaining('--http-put-response-hop-limit 2') });
  });
});

describe('rp-filter', () => {
  const withSysctl = (s: Record<string, number>, bridges = false): DoctorFacts => {
    const f = healthy();
    return { ...f, sysctl: { ...f.sysctl, ...s }, kernel: { ...f.kernel, links: bridges ? [...f.kernel.links, docker0] : f.kernel.links } };
  };
  it('effective value is max(all, iface)', () => {
    expect(sev(checkRpFilter(withSysctl({ 'all.rp_filter': 1, 'eth1.rp_filter': 0 }, true)))).toEqual(['error']);
    expect(sev(checkRpFilter(withSysctl({ 'all.rp_filter': 0, 'eth1.rp_filter': 1 }, true)))).toEqual(['error']);
    expect(sev(checkRpFilter(withSysctl({ 'all.rp_filter': 2, 'eth1.rp_filter': 1 }, true)))).toEqual(['ok']);
  });
  it('strict with containers: error without src_valid_mark, ok with it; strict without containers: info', () => {
    const e = checkRpFilter(withSysctl({ 'eth1.rp_filter': 1, 'all.src_valid_mark': 0 }, true))[0];
    expect(e?.message).toContain('src_valid_mark=0');
    expect(e?.fix).toContain('net.ipv4.conf.all.src_valid_mark=1');
    expect(sev(checkRpFilter(withSysctl({ 'eth1.rp_filter': 1, 'all.src_valid_mark': 1 }, true)))).toEqual(['ok']);
    expect(sev(checkRpFilter(withSysctl({ 'eth1.rp_filter': 1 })))).toEqual(['info']);
  });
  it('containers disabled in the config: bridges do not count', () => {
    const f = withSysctl({ 'eth1.rp_filter': 1 }, true);
    expect(sev(checkRpFilter({ ...f, config: { ...config, containers: { ...config.containers, enabled: false } } }))).toEqual(['info']);
  });
});

describe('foreign rules and coexistence', () => {
  const withRules = (rules: KernelRule[], routes: KernelRoute[] = []): DoctorFacts => {
    const f = healthy();
    return { ...f, kernel: { ...f.kernel, rules: [...f.kernel.rules, ...rules], routes: [...f.kernel.routes, ...routes] } };
  };
  it('a foreign rule for an ENI address ahead of ec2netd\'s, to another table: error with the ip rule del', () => {
    const findings = checkForeign(withRules([{ family: 4, priority: 500, table: 200, protocol: 3, src: '10.0.1.20/32', action: 1 }]));
    const shadow = findings.find((x) => x.check === 'foreign-rules');
    expect(shadow?.severity).toBe('error');
    expect(shadow?.fix).toContain('ip rule del from 10.0.1.20/32 lookup 200 pref 500 proto 3');
    expect(findings.find((x) => x.check === 'coexistence')?.severity).toBe('warn');
  });
  it('ec2-net-utils rules for the same table: a warning naming it and the policy\'s verdict, no shadow error', () => {
    const findings = checkForeign(withRules([{ family: 4, priority: 10001, table: 10001, protocol: 4, src: '10.0.1.20/32', action: 1 }]));
    expect(sev(findings)).toEqual(['warn']);
    expect(findings[0]?.message).toContain('managed by amazon-ec2-net-utils');
    expect(findings[0]?.fix).toContain('systemctl disable --now');
  });
  it('a foreign route in an ENI table is a collision', () => {
    const findings = checkForeign(withRules([], [{ family: 4, table: 10001, dst: '192.168.0.0/16', gateway: '10.0.1.1', ifindex: 3, protocol: 4, scope: 0, type: 1 }]));
    expect(findings[0]).toMatchObject({ check: 'coexistence', severity: 'warn', message: expect.stringContaining('route 192.168.0.0/16 via 10.0.1.1') });
  });
  it('rules shaped like ec2netd\'s with another protocol: a second ec2netd or copies', () => {
    const findings = checkForeign(withRules([{ family: 4, priority: 10100, table: 10005, protocol: 200, src: '10.0.9.9/32', action: 1 }]));
    expect(findings.find((x) => x.message.includes('another ec2netd'))?.severity).toBe('warn');
  });
  it('works without IMDS, from ec2netd\'s own rules in the kernel', () => {
    const f = healthy();
    const desired = desiredFromKernel(f.kernel, config);
    expect(desired.enis.map((e) => [e.link.name, e.table])).toEqual([['eth1', 10001]]);
    const findings = checkForeign({ ...f, desired, kernel: { ...f.kernel, rules: [...f.kernel.rules, { family: 4, priority: 500, table: 200, protocol: 3, src: '10.0.1.20/32', action: 1 }] } });
    expect(findings.some((x) => x.severity === 'error')).toBe(true);
  });
});

describe('managers', () => {
  it('active: warn; installed only: info; none: ok', () => {
    expect(sev(checkManagers({ managers: [] }))).toEqual(['ok']);
    expect(sev(checkManagers({ managers: [{ id: 'amazon-ec2-net-utils', installed: true, active: false, evidence: ['/usr/lib/systemd/system/policy-routes@.service'] }] }))).toEqual(['info']);
    const w = checkManagers({ managers: [{ id: 'cloud-init/netplan', installed: true, active: true, evidence: ['/etc/netplan/50-cloud-init.yaml (routing-policy)'] }] })[0];
    expect(w).toMatchObject({ severity: 'warn', message: expect.stringContaining('cloud-init/netplan is active (/etc/netplan/50-cloud-init.yaml') });
  });
});

describe('networkd', () => {
  const n = (state: DoctorFacts['networkd']['state'], rules?: boolean, routes?: boolean): DoctorFacts['networkd'] =>
    ({ state, files: [], evidence: [], ...(rules === undefined ? {} : { manageForeignRoutingPolicyRules: rules }), ...(routes === undefined ? {} : { manageForeignRoutes: routes }) });
  it('severity follows the state when the defaults (yes) are in force', () => {
    expect(sev(checkNetworkd({ networkd: n('absent') }))).toEqual(['ok']);
    expect(sev(checkNetworkd({ networkd: n('installed') }))).toEqual(['info']);
    expect(sev(checkNetworkd({ networkd: n('enabled') }))).toEqual(['warn']);
    expect(sev(checkNetworkd({ networkd: n('active') }))).toEqual(['error']);
  });
  it('both settings no: ok; one left at yes names it', () => {
    expect(sev(checkNetworkd({ networkd: n('active', false, false) }))).toEqual(['ok']);
    const f = checkNetworkd({ networkd: n('active', false, true) })[0];
    expect(f?.message).toContain('ManageForeignRoutes is yes');
    expect(f?.fix).toContain('ManageForeignRoutingPolicyRules=no and ManageForeignRoutes=no');
  });
});

describe('iptables', () => {
  const ipt = (nft: [boolean, boolean] | undefined, legacy: [boolean, boolean] | undefined) => checkIptables({
    config,
    iptables: {
      nft: nft === undefined ? undefined : { dockerChains: nft[0], ourChain: nft[1] },
      legacy: legacy === undefined ? undefined : { dockerChains: legacy[0], ourChain: legacy[1] },
    },
  });
  it('ec2netd\'s chain in one backend, Docker\'s in the other: error', () => {
    const [f] = ipt([false, true], [true, false]);
    expect(f?.severity).toBe('error');
    expect(f?.message).toContain('EC2NETD is in iptables-nft but Docker\'s chains are in iptables-legacy');
  });
  it('same backend ok; chain in both warn; Docker in both warn; no iptables info', () => {
    expect(sev(ipt([true, true], [false, false]))).toEqual(['ok']);
    expect(sev(ipt([true, true], [false, true]))).toEqual(['warn']);
    expect(sev(ipt([true, false], [true, false]))).toEqual(['warn']);
    expect(sev(ipt(undefined, undefined))).toEqual(['info']);
  });
});

describe('mtu', () => {
  const m = (mtu: Record<string, number>) => checkMtu({ ...healthy(), mtu });
  it('equal MTUs: ok (+ the 9001/1500 note); mismatch: warn; above 9001: warn', () => {
    expect(sev(m({ eth0: 9001, eth1: 9001 }))).toEqual(['ok', 'info']);
    expect(sev(m({ eth0: 1500, eth1: 1500 }))).toEqual(['ok']);
    const [mismatch] = m({ eth0: 9001, eth1: 1500 });
    expect(mismatch).toMatchObject({ severity: 'warn', message: expect.stringContaining('eth0: 9001; eth1: 1500') });
    expect(sev(m({ eth0: 9216, eth1: 9216 }))).toEqual(['warn', 'warn']);
  });
});

describe('arp', () => {
  it('two ENIs in one subnet with arp_ignore=0 or arp_announce=0: info with the sysctls', () => {
    const f = healthy();
    expect(sev(checkArp(f))).toEqual(['ok']);
    const flux = checkArp({ ...f, sysctl: { ...f.sysctl, 'all.arp_ignore': 0 } })[0];
    expect(flux).toMatchObject({ severity: 'info', fix: expect.stringContaining('arp_ignore=1') });
    expect(flux?.message).toContain('eth0, eth1 share 10.0.1.0/24');
  });
});

describe('main-routes', () => {
  const withMain = (...routes: KernelRoute[]): DoctorFacts => {
    const f = healthy();
    return { ...f, kernel: { ...f.kernel, routes: [...f.kernel.routes.filter((r) => r.table !== 254), mainDefault, ...routes] } };
  };
  it('a secondary ENI\'s connected route ahead of the primary\'s: error; level: warn; behind: ok', () => {
    expect(sev(checkMainRoutes(withMain(connected(2, 100))))).toEqual(['ok']);
    const [ahead] = checkMainRoutes(withMain(connected(2, 100), connected(3, 0)));
    expect(ahead).toMatchObject({ severity: 'error', message: expect.stringContaining('via eth1 (metric 0) ahead of eth0\'s (metric 100)') });
    expect(ahead?.fix).toContain('ip route del 10.0.1.0/24 dev eth1 metric 0 table main');
    expect(sev(checkMainRoutes(withMain(connected(2, 100), connected(3, 100))))).toEqual(['warn']);
    expect(sev(checkMainRoutes(withMain(connected(2, 100), connected(3, 200))))).toEqual(['ok']);
  });
  it('a default route via a secondary ENI ahead of the primary\'s: error', () => {
    const f = checkMainRoutes(withMain(connected(2, 100), { ...mainDefault, ifindex: 3, metric: 50 }));
    expect(f[0]).toMatchObject({ severity: 'error', message: expect.stringContaining('the default route via eth1') });
  });
});
