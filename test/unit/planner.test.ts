import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildDesired, tableFor } from '../../src/core/desired';
import { diff, ownedAddressKey } from '../../src/core/diff';
import { formatChange } from '../../src/core/format';
import type { ImdsSnapshot, KernelLink, KernelRoute, KernelRule, KernelState } from '../../src/core/types';
import { applyKernel, eni } from '../helpers/kernel-model';

const config = defaultConfig({});
const P = config.protocol;

const eth0: KernelLink = { index: 2, name: 'eth0', mac: '02:00:00:00:00:10', up: true };
const eth1: KernelLink = { index: 3, name: 'eth1', mac: '02:00:00:00:00:20', up: false };

const snapshot: ImdsSnapshot = {
  primaryMac: eth0.mac,
  enis: [eni(eth0.mac, 0, ['10.0.1.10', '10.0.1.11']), eni(eth1.mac, 1, ['10.0.1.20', '10.0.1.21'], { ipv4Prefixes: ['10.0.1.64/28'] })],
  pending: [],
};

const empty: KernelState = { links: [eth0, eth1], addresses: [], routes: [], rules: [] };

describe('buildDesired', () => {
  it('gives each secondary ENI a table, routes, source rules and its addresses; the primary only its secondary IPs', () => {
    const d = buildDesired(snapshot, empty, config);
    expect(d.enis.map((e) => [e.link.name, e.table])).toEqual([['eth0', undefined], ['eth1', 10001]]);
    expect(d.linksUp).toEqual([eth1.index]);
    expect(d.addresses).toEqual([
      { ifindex: 2, family: 4, address: '10.0.1.11', prefixLen: 24, noPrefixRoute: false },
      { ifindex: 3, family: 4, address: '10.0.1.20', prefixLen: 24, noPrefixRoute: true },
      { ifindex: 3, family: 4, address: '10.0.1.21', prefixLen: 24, noPrefixRoute: true },
    ]);
    expect(d.routes).toEqual([
      { family: 4, table: 10001, dst: '10.0.1.0/24', ifindex: 3, prefsrc: '10.0.1.20', protocol: P, scope: 253, type: 1 },
      { family: 4, table: 10001, dst: '0.0.0.0/0', gateway: '10.0.1.1', ifindex: 3, protocol: P, scope: 0, type: 1 },
    ]);
    expect(d.rules.map((r) => [r.src, r.table, r.priority])).toEqual([
      ['10.0.1.20/32', 10001, 10100], ['10.0.1.21/32', 10001, 10100], ['10.0.1.64/28', 10001, 10100],
    ]);
  });

  it('uses 10000 + 100 * network-card + device-number, and honours /32 secondaries', () => {
    expect(tableFor({ networkCard: 1, deviceNumber: 2 }, config)).toBe(10102);
    const d = buildDesired(snapshot, empty, { ...config, secondaryAddressPrefix: 'host' });
    expect(d.addresses.filter((a) => a.ifindex === 3).map((a) => a.prefixLen)).toEqual([24, 32]);
  });

  it('matches ENIs by MAC whatever the link is called, and ignores VLANs sharing the MAC', () => {
    const links: KernelLink[] = [eth0, { ...eth1, index: 9, name: 'ens6' }, { ...eth1, index: 12, name: 'ens6.5', kind: 'vlan' }];
    const d = buildDesired(snapshot, { links, addresses: [] }, config);
    expect(d.enis[1]?.link.name).toBe('ens6');
  });

  it('skips an ENI with no link, and never configures two ENIs into one table', () => {
    const clash = eni('02:00:00:00:00:30', 1, ['10.0.1.30']);
    const links = [...empty.links, { index: 4, name: 'eth2', mac: clash.mac, up: true }];
    const d = buildDesired({ ...snapshot, enis: [...snapshot.enis, clash, eni('02:00:00:00:00:40', 3, ['10.0.1.40'])] }, { links, addresses: [] }, config);
    expect(d.enis.map((e) => e.eni.mac)).toEqual([eth0.mac, eth1.mac]);
    expect(d.skipped.map((s) => s.reason)).toEqual([
      expect.stringContaining('table 10001 is already used'), expect.stringContaining('no link with MAC 02:00:00:00:00:40'),
    ]);
  });
});

describe('buildDesired with container bridges', () => {
  const docker0: KernelLink = { index: 7, name: 'docker0', mac: '02:42:00:00:00:01', up: true, kind: 'bridge' };
  const kernel = { links: [...empty.links, docker0], addresses: [{ ifindex: 7, family: 4 as const, address: '172.17.0.1', prefixLen: 16 }] };

  it('routes the bridge subnet in every ENI table, keeps it in main, and marks connections per secondary ENI', () => {
    const d = buildDesired(snapshot, kernel, config);
    expect(d.routes).toContainEqual({ family: 4, table: 10001, dst: '172.17.0.0/16', ifindex: 7, protocol: P, scope: 253, type: 1 });
    expect(d.rules).toContainEqual({ family: 4, priority: 10050, table: 254, protocol: P, dst: '172.17.0.0/16', action: 1 });
    expect(d.rules).toContainEqual({ family: 4, priority: 10200, table: 10001, protocol: P, fwmark: 0x1, fwmask: 0x1f7f, action: 1 });
    expect(d.mangle.rules.map((r) => `${r.kind} ${r.inIface}`)).toEqual(['set-mark eth1', 'restore-mark eth1', 'restore-mark docker0']);
  });

  it('plans source routing anyway when the mark mask is too small, and says why', () => {
    const d = buildDesired(snapshot, kernel, { ...config, containers: { ...config.containers, markMask: 0x80000000 }, tablePerCard: 100 });
    const wide = buildDesired({ ...snapshot, enis: [...snapshot.enis, eni('02:00:00:00:00:30', 3, ['10.0.1.30'])] },
      { ...kernel, links: [...kernel.links, { index: 4, name: 'eth2', mac: '02:00:00:00:00:30', up: true }] },
      { ...config, containers: { ...config.containers, markMask: 0x2 } });
    expect(d.problems).toEqual([]);
    expect(wide.problems).toEqual([expect.stringContaining('containers.markMask')]);
    expect(wide.rules.filter((r) => r.src !== undefined)).toHaveLength(4);
    expect(wide.mangle.rules).toEqual([]);
  });
});

describe('diff', () => {
  const desired = buildDesired(snapshot, empty, config);
  const base = { desired, protocol: P, ownedAddresses: new Set<string>() };

  it('orders a plan make-before-break and renders it as ip commands', () => {
    const { plan } = diff({ ...base, observed: empty });
    expect(plan.map(formatChange)).toEqual([
      'ip link set dev eth1 up',
      'ip address add 10.0.1.11/24 dev eth0',
      'ip address add 10.0.1.20/24 dev eth1 noprefixroute',
      'ip address add 10.0.1.21/24 dev eth1 noprefixroute',
      `ip route add 10.0.1.0/24 dev eth1 src 10.0.1.20 table 10001 proto ${P} scope link`,
      `ip route add default via 10.0.1.1 dev eth1 table 10001 proto ${P}`,
      `ip rule add from 10.0.1.20/32 lookup 10001 pref 10100 proto ${P}`,
      `ip rule add from 10.0.1.21/32 lookup 10001 pref 10100 proto ${P}`,
      `ip rule add from 10.0.1.64/28 lookup 10001 pref 10100 proto ${P}`,
    ]);
  });

  it('is empty once applied, and removes stale and duplicate owned rules but never foreign ones', () => {
    const after = applyKernel(empty, diff({ ...base, observed: empty }).plan);
    expect(diff({ ...base, observed: after }).plan).toEqual([]);
    const stale: KernelRule = { family: 4, priority: 10100, table: 10001, protocol: P, src: '10.0.1.99/32', action: 1 };
    const foreign: KernelRule = { ...stale, src: '10.0.1.98/32', protocol: 4 };
    const dup = after.rules[0]!;
    const { plan } = diff({ ...base, observed: { ...after, rules: [...after.rules, stale, foreign, dup] } });
    expect(plan.map((c) => [c.op, c.reason])).toEqual([['del-rule', 'duplicate'], ['del-rule', 'no longer desired']]);
  });

  it('replaces an owned route in place when its attributes change, and leaves a foreign route alone', () => {
    const after = applyKernel(empty, diff({ ...base, observed: empty }).plan);
    const moved = after.routes.map((r) => (r.prefsrc !== undefined ? { ...r, prefsrc: '10.0.1.21' } : r));
    const { plan } = diff({ ...base, observed: { ...after, routes: moved } });
    expect(plan.map(formatChange)).toEqual([`ip route replace 10.0.1.0/24 dev eth1 src 10.0.1.20 table 10001 proto ${P} scope link`]);
    const foreign: KernelRoute = { ...after.routes[1]!, protocol: 3, gateway: '10.0.1.254' };
    const res = diff({ ...base, observed: { ...after, routes: [after.routes[0]!, foreign] } });
    expect(res.plan).toEqual([]);
    expect(res.conflicts).toEqual([expect.stringContaining('does not own')]);
  });

  it('removes only the addresses ec2netd added, and only when IMDS no longer lists them', () => {
    const after = applyKernel(empty, diff({ ...base, observed: empty }).plan);
    const extra = [{ ifindex: 3, family: 4 as const, address: '10.0.1.50', prefixLen: 24 }, { ifindex: 3, family: 4 as const, address: '10.0.1.51', prefixLen: 24 }];
    const owned = new Set([ownedAddressKey(eth1.mac, '10.0.1.50')]);
    const { plan } = diff({ ...base, ownedAddresses: owned, observed: { ...after, addresses: [...after.addresses, ...extra] } });
    expect(plan.map(formatChange)).toEqual(['ip address del 10.0.1.50/24 dev eth1']);
  });

  it('cleans up everything of a detached ENI and nothing else', () => {
    const after = applyKernel(empty, diff({ ...base, observed: empty }).plan);
    const gone: KernelState = { ...after, links: [eth0], addresses: after.addresses.filter((a) => a.ifindex !== 3), routes: [] };
    const d = buildDesired(snapshot, gone, config);
    const { plan } = diff({ ...base, desired: d, observed: gone });
    expect(plan.map((c) => c.op)).toEqual(['del-rule', 'del-rule', 'del-rule']);
  });
});

// Property tests: arbitrary instances and arbitrary pre-existing kernel junk.
const arbIp = fc.integer({ min: 2, max: 250 }).map((n) => `10.0.1.${n}`);
const arbEni = (dev: number) =>
  fc.record({ ips: fc.uniqueArray(arbIp, { minLength: 1, maxLength: 6 }), up: fc.boolean() })
    .map(({ ips, up }) => ({ info: eni(`02:00:00:00:01:${dev.toString(16).padStart(2, '0')}`, dev, ips), up }));
const arbRule = fc.record({
  src: arbIp.map((ip) => `${ip}/32`), table: fc.integer({ min: 10000, max: 10005 }), priority: fc.constantFrom(10100, 10200, 500),
  protocol: fc.constantFrom(P, 3, 4), family: fc.constant(4 as const), action: fc.constant(1),
});
const arbRoute = fc.record({
  family: fc.constant(4 as const), table: fc.integer({ min: 10000, max: 10005 }), dst: fc.constantFrom('10.0.1.0/24', '0.0.0.0/0', '10.9.0.0/16'),
  ifindex: fc.integer({ min: 10, max: 14 }), protocol: fc.constantFrom(P, 3), scope: fc.constantFrom(0, 253), type: fc.constant(1),
});

describe('planner properties', () => {
  it('applying a plan to any observed state, then planning again, yields nothing; foreign objects are never deleted', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 5 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => arbEni(i)))),
      fc.array(arbRule, { maxLength: 12 }), fc.array(arbRoute, { maxLength: 8 }),
      (enis, rules, routes) => {
        const links = enis.map((e, i) => ({ index: 10 + i, name: `eth${i}`, mac: e.info.mac, up: e.up }));
        const snap: ImdsSnapshot = { primaryMac: enis[0]!.info.mac, enis: enis.map((e) => e.info), pending: [] };
        const observed: KernelState = { links, addresses: [], rules, routes };
        const desired = buildDesired(snap, observed, config);
        const input = { desired, protocol: P, ownedAddresses: new Set<string>() };
        const { plan } = diff({ ...input, observed });
        for (const c of plan) {
          if (c.op === 'del-rule') expect(c.rule.protocol).toBe(P);
          if (c.op === 'del-route' || c.op === 'replace-route') expect((c.op === 'del-route' ? c.route : c.previous).protocol).toBe(P);
        }
        const firstDel = plan.findIndex((c) => c.op.startsWith('del-'));
        if (firstDel >= 0) expect(plan.slice(firstDel).every((c) => c.op.startsWith('del-'))).toBe(true);
        const after = applyKernel(observed, plan);
        expect(diff({ ...input, observed: after }).plan).toEqual([]);
        for (const foreign of [...rules, ...routes].filter((o) => o.protocol !== P)) {
          expect([...after.rules, ...after.routes]).toContainEqual(foreign);
        }
      },
    ), { numRuns: 300 });
  });
});

describe('the diff keeps its index of a dump', () => {
  // A dump's arrays are indexed once (src/core/diff.ts): planned again from the same arrays, against other wants and
  // either protocol, the diff must give exactly what it gives from fresh copies of them.
  it('a diff from an indexed dump equals a diff from copies of it, whatever was planned from it before', () => {
    const arbAddress = fc.record({ ifindex: fc.integer({ min: 10, max: 12 }), address: arbIp })
      .map(({ ifindex, address }) => ({ ifindex, family: 4 as const, address, prefixLen: 24 }));
    const arbSnap = fc.integer({ min: 1, max: 3 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => arbEni(i))));
    fc.assert(fc.property(
      arbSnap, arbSnap, fc.array(arbRule, { maxLength: 12 }), fc.array(arbAddress, { maxLength: 10 }), fc.constantFrom(P, 3),
      (first, second, rules, addresses, protocol) => {
        const links = [10, 11, 12].map((index, i) => ({ index, name: `eth${i}`, mac: `02:00:00:00:01:0${i}`, up: true }));
        const observed: KernelState = { links, addresses, rules, routes: [] };
        const plan = (enis: typeof first, seen: KernelState, proto: number) => {
          const snap: ImdsSnapshot = { primaryMac: enis[0]!.info.mac, enis: enis.map((e) => e.info), pending: [] };
          const owned = new Set(addresses.slice(0, 3).map((a) => `${links[a.ifindex - 10]!.mac}|${a.address}`));
          return diff({ desired: buildDesired(snap, seen, config), observed: seen, protocol: proto, ownedAddresses: owned });
        };
        plan(first, observed, P);
        const copy = (): KernelState => ({ links: [...links], addresses: [...addresses], rules: [...rules], routes: [] });
        expect(plan(second, observed, protocol)).toEqual(plan(second, copy(), protocol));
      },
    ), { numRuns: 300 });
  });
});

describe('buildDesired keeps what it built for an IMDS entry', () => {
  // The same ENI objects planned again against other links (renumbered, renamed, another primary, another config)
  // must give exactly what a build from fresh copies gives: nothing stale is reused.
  it('a build that reuses earlier objects equals a build from copies, whatever changed in between', () => {
    const arbLinks = (n: number) => fc.tuple(fc.integer({ min: 2, max: 40 }), fc.boolean(), fc.boolean())
      .map(([base, rename, up]) => Array.from({ length: n }, (_, i) => ({ index: base + i, name: rename ? `ens${i}` : `eth${i}`, up })));
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 4 }).chain((n) => fc.tuple(fc.tuple(...Array.from({ length: n }, (_, i) => arbEni(i))), arbLinks(n), arbLinks(n))),
      fc.nat(3), fc.constantFrom('host', 'subnet' as const), fc.boolean(),
      ([enis, first, second], primary, prefix, prefixHosts) => {
        const infos = enis.map((e) => e.info);
        const kernelOf = (links: Array<{ index: number; name: string; up: boolean }>): KernelState => ({
          links: links.map((l, i) => ({ ...l, mac: infos[i]!.mac })), addresses: [], routes: [], rules: [],
        });
        const snap: ImdsSnapshot = { primaryMac: infos[0]!.mac, enis: infos, pending: [] };
        buildDesired(snap, kernelOf(first), config);
        const other = { ...config, secondaryAddressPrefix: prefix, ipv4PrefixAddresses: prefixHosts };
        const again = { ...snap, primaryMac: infos[primary % infos.length]!.mac };
        const copy = structuredClone(again);
        expect(buildDesired(again, kernelOf(second), config)).toEqual(buildDesired(copy, kernelOf(second), config));
        expect(buildDesired(again, kernelOf(second), other)).toEqual(buildDesired(copy, kernelOf(second), other));
      },
    ), { numRuns: 300 });
  });
});
