import { describe, expect, it } from 'vitest';
import { defaultConfig, type Config } from '../../src/config';
import {
  attributeRule, decide, findClaims, resolveCoexistence, withAdoption, type ManagerPresence,
} from '../../src/core/coexistence';
import { buildDesired } from '../../src/core/desired';
import { diff } from '../../src/core/diff';
import type { EniInfo, ImdsSnapshot, KernelLink, KernelRoute, KernelRule, KernelState } from '../../src/core/types';

const base = defaultConfig({});
const P = base.protocol;
const withPolicy = (policy: Config['coexistence']['policy']): Config => ({ ...base, coexistence: { ...base.coexistence, policy } });

const eth0: KernelLink = { index: 2, name: 'eth0', mac: '02:00:00:00:00:10', up: true };
const eth1: KernelLink = { index: 3, name: 'eth1', mac: '02:00:00:00:00:20', up: true };
const eth2: KernelLink = { index: 4, name: 'eth2', mac: '02:00:00:00:00:30', up: true };

function eni(mac: string, dev: number, ips: string[], prefixes: string[] = []): EniInfo {
  return {
    mac, deviceNumber: dev, networkCard: 0, interfaceId: `eni-${dev}`, ipv4s: ips, ipv4Prefixes: prefixes,
    ipv6s: [], ipv6Prefixes: [], subnetIpv4Cidr: '10.0.1.0/24', subnetIpv6Cidrs: [],
  };
}

const snapshot: ImdsSnapshot = {
  primaryMac: eth0.mac,
  enis: [eni(eth0.mac, 0, ['10.0.1.10']), eni(eth1.mac, 1, ['10.0.1.20', '10.0.1.21'], ['10.0.1.64/28']), eni(eth2.mac, 2, ['10.0.1.30'])],
  pending: [],
};

const rule = (src: string | undefined, table: number, priority: number, protocol = 4): KernelRule =>
  ({ family: 4, priority, table, protocol, action: 1, ...(src === undefined ? {} : { src }) });
const route = (table: number, dst: string, extra: Partial<KernelRoute> = {}): KernelRoute =>
  ({ family: 4, table, dst, ifindex: eth1.index, protocol: 4, scope: dst === '0.0.0.0/0' ? 0 : 253, type: 1, ...extra });

/** amazon-ec2-net-utils v2 for eth1: `from <ip> lookup 10001 pref 10001` and its table. */
const netUtilsRules = [rule('10.0.1.20/32', 10001, 10001), rule('10.0.1.21/32', 10001, 10001), rule('10.0.1.64/28', 10001, 10001)];
const netUtilsRoutes = [route(10001, '10.0.1.0/24'), route(10001, '0.0.0.0/0', { gateway: '10.0.1.1' })];

const kernelWith = (rules: KernelRule[], routes: KernelRoute[] = []): KernelState => ({ links: [eth0, eth1, eth2], addresses: [], rules, routes });

const inactive: ManagerPresence[] = [
  { id: 'amazon-ec2-net-utils', installed: false, active: false, evidence: [] },
  { id: 'cloud-init/netplan', installed: false, active: false, evidence: [] },
];
/** Installed (its unit files are there) but stopped and disabled: its objects are leftovers. */
const stopped: ManagerPresence[] = [
  { id: 'amazon-ec2-net-utils', installed: true, active: false, evidence: ['/usr/lib/systemd/system/policy-routes@.service'] },
  inactive[1] as ManagerPresence,
];
const active: ManagerPresence[] = [
  { id: 'amazon-ec2-net-utils', installed: true, active: true, evidence: ['/run/systemd/network/70-eth1.network'] },
  inactive[1] as ManagerPresence,
];

function resolve(config: Config, kernel: KernelState, managers = inactive) {
  return resolveCoexistence({ snapshot, kernel, config, managers, build: (s) => buildDesired(s, kernel, config) });
}

describe('attributeRule', () => {
  it('knows ec2-net-utils by pref = table, cloud-init by table 100-199, else the only installed tool, else unknown', () => {
    expect(attributeRule(rule('10.0.1.20/32', 10001, 10001), base, inactive)).toBe('amazon-ec2-net-utils');
    expect(attributeRule(rule('10.0.1.20/32', 101, 0), base, inactive)).toBe('cloud-init/netplan');
    expect(attributeRule(rule('10.0.1.20/32', 200, 500), base, inactive)).toBe('unknown');
    expect(attributeRule(rule('10.0.1.20/32', 200, 500), base, active)).toBe('amazon-ec2-net-utils');
  });
});

describe('findClaims', () => {
  const desired = buildDesired(snapshot, kernelWith([]), base);

  it('no foreign object: no claim', () => {
    expect(findClaims(desired, kernelWith([rule(undefined, 254, 32766, 2)]), base, inactive)).toEqual([]);
  });

  it('ec2-net-utils rules and routes claim eth1 only; its rules shadow ec2netd (earlier) but use the same table', () => {
    const claims = findClaims(desired, kernelWith(netUtilsRules, netUtilsRoutes), base, inactive);
    expect(claims.map((c) => [c.linkName, c.table, c.claims.length])).toEqual([['eth1', 10001, 5]]);
    const rules = claims[0]?.claims.filter((c) => c.kind === 'rule') ?? [];
    expect(rules.every((c) => c.shadows && !c.elsewhere && c.manager === 'amazon-ec2-net-utils')).toBe(true);
    expect(claims[0]?.claims.filter((c) => c.kind === 'route').map((c) => c.manager)).toEqual(['amazon-ec2-net-utils', 'amazon-ec2-net-utils']);
  });

  it('a rule inside a delegated prefix, a rule looking up the table, a later rule: all claims; only earlier ones shadow', () => {
    const claims = findClaims(desired, kernelWith([
      rule('10.0.1.70/32', 200, 500), rule(undefined, 10002, 900), rule('10.0.1.30/32', 300, 20000),
    ]), base, inactive);
    const byLink = Object.fromEntries(claims.map((c) => [c.linkName, c.claims.map((x) => [x.text, x.shadows, x.elsewhere])]));
    expect(byLink.eth1).toEqual([['rule from 10.0.1.70/32 lookup 200 pref 500 proto 4', true, true]]);
    expect(byLink.eth2).toEqual([
      ['rule from all lookup 10002 pref 900 proto 4', false, false],
      ['rule from 10.0.1.30/32 lookup 300 pref 20000 proto 4', false, true],
    ]);
  });

  it('ignores ec2netd\'s own objects and the primary ENI', () => {
    const own = [...desired.rules];
    expect(findClaims(desired, kernelWith([...own, rule('10.0.1.10/32', 100, 100)], desired.routes), base, inactive)).toEqual([]);
  });
});

describe('decide', () => {
  const desired = buildDesired(snapshot, kernelWith([]), base);
  const claims = findClaims(desired, kernelWith(netUtilsRules, netUtilsRoutes), base, inactive);
  const unknown = findClaims(desired, kernelWith([rule('10.0.1.20/32', 200, 500)]), base, inactive);

  it('refuse: hands off, naming the owner and what to do', () => {
    const [v] = decide(claims, 'refuse', inactive);
    expect(v?.action).toBe('hands-off');
    expect(v?.reason).toContain('eth1 (eni-1, table 10001): not configured: its sources or table are managed by amazon-ec2-net-utils');
    expect(v?.reason).toContain('coexistence.policy');
  });

  it('adopt: takes over leftovers of a stopped tool; waits while it is active; never adopts from an unknown owner', () => {
    expect(decide(claims, 'adopt', stopped)[0]?.action).toBe('adopt');
    const waiting = decide(claims, 'adopt', active)[0];
    expect(waiting?.action).toBe('hands-off');
    expect(waiting?.reason).toContain('amazon-ec2-net-utils is still active (/run/systemd/network/70-eth1.network)');
    expect(decide(unknown, 'adopt', inactive)[0]?.action).toBe('hands-off');
  });

  it('adopt: table numbers alone are no evidence; without the tool\'s files or units the rules are left and said so', () => {
    const [v] = decide(claims, 'adopt', inactive);
    expect(v?.action).toBe('hands-off');
    expect(v?.reason).toContain('follow amazon-ec2-net-utils\'s conventions, but no file or unit of that tool is installed');
    expect(v?.reason).toContain('rule from 10.0.1.20/32 lookup 10001 pref 10001');
    // "installed" without any path to show for it is not evidence either.
    expect(decide(claims, 'adopt', [{ id: 'amazon-ec2-net-utils', installed: true, active: false, evidence: [] }])[0]?.action).toBe('hands-off');
    const r = resolve(withPolicy('adopt'), kernelWith(netUtilsRules, netUtilsRoutes), inactive);
    expect(r.adoptDeletions).toEqual([]);
    expect(r.desired.rules.some((x) => x.table === 10001)).toBe(false);
  });

  it('coexist: configures and says when a foreign rule makes ec2netd\'s ineffective', () => {
    const [v] = decide(unknown, 'coexist', inactive);
    expect(v?.action).toBe('configure');
    expect(v?.reason).toContain('is consulted first');
  });
});

describe('resolveCoexistence and the plan', () => {
  it('no claim: the same desired state and plan as without coexistence', () => {
    const kernel = kernelWith([]);
    const r = resolve(base, kernel);
    expect(r.desired).toEqual(buildDesired(snapshot, kernel, base));
    expect(r.notes).toEqual([]);
    expect(withAdoption([], r)).toEqual([]);
  });

  it('asks for the other tools\' presence only when a foreign object claims an ENI, and then once', () => {
    let asked = 0;
    const lookup = (): ManagerPresence[] => { asked++; return active; };
    const quiet = kernelWith([rule(undefined, 254, 32766, 2), rule('192.168.9.9/32', 300, 500)]);
    const none = resolveCoexistence({ snapshot, kernel: quiet, config: base, managers: lookup, build: (s) => buildDesired(s, quiet, base) });
    expect(asked).toBe(0);
    expect(none.verdicts).toEqual([]);
    const claimed = kernelWith(netUtilsRules, netUtilsRoutes);
    const lazy = resolveCoexistence({ snapshot, kernel: claimed, config: withPolicy('adopt'), managers: lookup, build: (s) => buildDesired(s, claimed, base) });
    expect(asked).toBe(1);
    // The same verdicts as with the presence handed over up front.
    expect(lazy.verdicts).toEqual(resolve(withPolicy('adopt'), claimed, active).verdicts);
    expect(lazy.verdicts.map((v) => v.action)).toEqual(['hands-off']);
  });

  it('refuse: nothing is written for the claimed ENI (no add, and ec2netd\'s own objects there are frozen), others are planned', () => {
    const stale = { ...route(10001, '10.9.0.0/16'), protocol: P };
    const ownOld = rule('10.0.1.99/32', 10001, base.priorities.fromAddress, P);
    const kernel = kernelWith([...netUtilsRules, ownOld], [...netUtilsRoutes, stale]);
    const r = resolve(base, kernel);
    const { plan } = diff({ desired: r.desired, observed: r.observed, protocol: P, ownedAddresses: new Set() });
    const touched = plan.filter((c) => ('route' in c && c.route.table === 10001) || ('rule' in c && c.rule.table === 10001)
      || ('address' in c && c.address.ifindex === eth1.index) || (c.op === 'link-up' && c.link.index === eth1.index));
    expect(touched).toEqual([]);
    expect(plan.some((c) => c.op === 'add-rule' && c.rule.table === 10002)).toBe(true);
    expect(r.notes).toHaveLength(1);
  });

  it('adopt: wanted slots held by foreign routes become atomic replaces; foreign rules go last; the result is stable', () => {
    const extra = route(10001, '192.168.0.0/16', { gateway: '10.0.1.1' });
    let kernel = kernelWith(netUtilsRules, [...netUtilsRoutes, extra]);
    const config = withPolicy('adopt');
    const r = resolve(config, kernel, stopped);
    const result = diff({ desired: r.desired, observed: r.observed, protocol: P, ownedAddresses: new Set() });
    expect(result.conflicts).toEqual([]);
    const plan = withAdoption(result.plan, r);
    const ops = plan.map((c) => c.op);
    expect(plan.filter((c) => c.op === 'replace-route').map((c) => (c.op === 'replace-route' ? `${c.route.dst} was proto ${c.previous.protocol}` : ''))).toEqual(
      ['10.0.1.0/24 was proto 4', '0.0.0.0/0 was proto 4'],
    );
    const firstDelete = ops.findIndex((o) => o.startsWith('del-'));
    expect(ops.slice(firstDelete).every((o) => o.startsWith('del-'))).toBe(true);
    expect(plan.filter((c) => c.op === 'del-rule').map((c) => (c.op === 'del-rule' ? c.rule.protocol : 0))).toEqual([4, 4, 4]);
    expect(plan.filter((c) => c.op === 'del-route').map((c) => (c.op === 'del-route' ? c.route.dst : ''))).toEqual(['192.168.0.0/16']);
    // Applied: only ec2netd's objects are left in table 10001, and a second pass has nothing to do.
    const others = kernel.rules.filter((x) => !netUtilsRules.includes(x));
    kernel = kernelWith([...others, ...r.desired.rules], r.desired.routes);
    const again = resolve(config, kernel, stopped);
    expect(again.notes).toEqual([]);
    expect(diff({ desired: again.desired, observed: again.observed, protocol: P, ownedAddresses: new Set() }).plan
      .filter((c) => c.op !== 'add-address' && c.op !== 'link-up')).toEqual([]);
  });

  it('adopt never deletes a foreign twin of a wanted rule (it is the only copy)', () => {
    const twin = rule('10.0.1.20/32', 10001, base.priorities.fromAddress, 4);
    // Installed but stopped: the twin is attributed to it (the only installed tool), so the ENI is adopted.
    const r = resolve(withPolicy('adopt'), kernelWith([twin, ...netUtilsRules]), stopped);
    expect(r.verdicts[0]?.action).toBe('adopt');
    expect(r.adoptDeletions.some((c) => c.op === 'del-rule' && c.rule === twin)).toBe(false);
    expect(r.adoptDeletions.filter((c) => c.op === 'del-rule')).toHaveLength(3);
  });

  it('adopt while active, or from an unknown owner: like refuse', () => {
    const kernel = kernelWith(netUtilsRules, netUtilsRoutes);
    expect(resolve(withPolicy('adopt'), kernel, active).adoptDeletions).toEqual([]);
    const r = resolve(withPolicy('adopt'), kernelWith([rule('10.0.1.20/32', 200, 500)]));
    expect(r.verdicts[0]?.action).toBe('hands-off');
    expect(r.desired.rules.some((x) => x.table === 10001)).toBe(false);
  });

  it('coexist: ec2netd plans its objects next to the foreign ones and deletes none of them', () => {
    const kernel = kernelWith(netUtilsRules, netUtilsRoutes);
    const r = resolve(withPolicy('coexist'), kernel);
    const result = diff({ desired: r.desired, observed: r.observed, protocol: P, ownedAddresses: new Set() });
    const plan = withAdoption(result.plan, r);
    expect(plan.some((c) => c.op === 'add-rule' && c.rule.table === 10001)).toBe(true);
    expect(plan.some((c) => (c.op === 'del-rule' || c.op === 'del-route') && (('rule' in c && c.rule.protocol !== P) || ('route' in c && c.route.protocol !== P)))).toBe(false);
    expect(result.conflicts.length).toBeGreaterThan(0);
    expect(r.notes[0]).toContain('configured next to amazon-ec2-net-utils');
  });
});
