// The rtnetlink adapter against a real kernel, in a throwaway namespace: dumps agree with `ip -json`, writes
// show up in `ip -json`, ownership (protocol) is respected, make-before-break holds when an add fails.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Change, KernelRoute, KernelRule, KernelState } from '../../src/core/types';
import { KERNEL_TOOL, createKernelNs, type KernelNs } from '../helpers/kernel-tool';
import { runInNs } from '../helpers/netns';

const PROTO = 236;

interface ApplyOut {
  applied: number;
  failed: { change: Change; code: string; message: string }[];
}

let k: KernelNs;
let ifindex: Record<string, number> = {};

async function dump(): Promise<KernelState> {
  const { stdout } = await runInNs(k.ns, KERNEL_TOOL, ['dump']);
  return JSON.parse(stdout) as KernelState;
}

async function apply(plan: Change[]): Promise<ApplyOut> {
  const { stdout } = await runInNs(k.ns, KERNEL_TOOL, ['apply'], { input: JSON.stringify(plan) });
  return JSON.parse(stdout) as ApplyOut;
}

function ipJson<T>(args: string[]): T {
  const text = k.ip(['-json', ...args]).trim();
  return JSON.parse(text === '' ? '[]' : text) as T;
}

interface IpRoute { type?: string; dst: string; gateway?: string; dev?: string; table?: string; protocol?: string; scope?: string; metric?: number; prefsrc?: string }
interface IpRule { priority: number; src: string; srclen?: number; dst?: string; dstlen?: number; table?: string; protocol?: string; fwmark?: string; fwmask?: string }

function routeKey(r: KernelRoute): string {
  return [r.family, r.table, r.dst, r.gateway ?? '-', r.ifindex ?? '-', r.protocol, r.scope, r.type, r.metric ?? '-', r.prefsrc ?? '-'].join(' ');
}

/** `ip -N -json route show table all`, as KernelRoute keys, table local left out (as the adapter does). */
function ipRoutes(family: 4 | 6): string[] {
  const rows = ipJson<IpRoute[]>([`-${family}`, '-N', 'route', 'show', 'table', 'all']);
  return rows.filter((r) => r.table !== '255').map((r) => {
    const host = family === 4 ? '/32' : '/128';
    const dst = r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? r.dst : r.dst + host;
    const route: KernelRoute = { family, table: Number(r.table ?? 254), dst, protocol: Number(r.protocol ?? 0), scope: Number(r.scope ?? 0), type: Number(r.type ?? 1) };
    if (r.gateway !== undefined) route.gateway = r.gateway;
    if (r.dev !== undefined) route.ifindex = ifindex[r.dev];
    if (r.metric !== undefined) route.metric = r.metric;
    if (r.prefsrc !== undefined) route.prefsrc = r.prefsrc;
    return routeKey(route);
  }).sort();
}

function ruleKey(r: KernelRule): string {
  return [r.family, r.priority, r.src ?? 'all', r.dst ?? 'all', r.fwmark ?? '-', r.fwmask ?? '-', r.table, r.protocol].join(' ');
}

function ipRules(family: 4 | 6): IpRule[] {
  return ipJson<IpRule[]>([`-${family}`, '-d', '-N', 'rule', 'show']);
}

function ipRuleKeys(family: 4 | 6): string[] {
  const host = family === 4 ? 32 : 128;
  return ipRules(family).map((r) => {
    const rule: KernelRule = { family, priority: r.priority, table: Number(r.table), protocol: Number(r.protocol ?? 0), action: 1 };
    if (r.src !== 'all') rule.src = `${r.src}/${r.srclen ?? host}`;
    if (r.dst !== undefined && r.dst !== 'all') rule.dst = `${r.dst}/${r.dstlen ?? host}`;
    if (r.fwmark !== undefined) rule.fwmark = Number(r.fwmark);
    if (r.fwmask !== undefined) rule.fwmask = Number(r.fwmask);
    return ruleKey(rule);
  }).sort();
}

const rule = (over: Partial<KernelRule>): KernelRule => ({ family: 4, priority: 10100, table: 10001, protocol: PROTO, action: 1, ...over });
const route = (over: Partial<KernelRoute>): KernelRoute => ({ family: 4, table: 10001, dst: '0.0.0.0/0', protocol: PROTO, scope: 0, type: 1, ...over });

describe('kernel adapter (rtnetlink) in a namespace', () => {
  beforeAll(() => {
    k = createKernelNs('kn');
    const links = ipJson<{ ifindex: number; ifname: string }[]>(['link', 'show']);
    ifindex = Object.fromEntries(links.map((l) => [l.ifname, l.ifindex]));
    // Some state made with `ip`, for the dump comparison: an address of each family, a noprefixroute address,
    // an owned route in a table > 255, an owned rule and a foreign fwmark rule.
    k.ip(['addr', 'add', '10.0.1.10/24', 'dev', 'v0']);
    k.ip(['addr', 'add', '10.0.2.20/24', 'dev', 'v1', 'noprefixroute']);
    k.ip(['-6', 'addr', 'add', 'fd00:1::10/64', 'dev', 'v0', 'nodad']);
    k.ip(['route', 'add', '10.0.1.0/24', 'dev', 'v0', 'table', '10001', 'proto', String(PROTO), 'scope', 'link', 'src', '10.0.1.10']);
    k.ip(['route', 'add', 'default', 'via', '10.0.1.1', 'dev', 'v0', 'table', '10001', 'proto', String(PROTO)]);
    k.ip(['-6', 'route', 'add', 'default', 'via', 'fd00:1::1', 'dev', 'v0', 'table', '10001', 'proto', String(PROTO)]);
    k.ip(['rule', 'add', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', String(PROTO)]);
    k.ip(['rule', 'add', 'fwmark', '0x80/0xff', 'lookup', '10001', 'pref', '10200']);
    k.ip(['-6', 'rule', 'add', 'from', 'fd00:1::10', 'lookup', '10001', 'pref', '10100', 'proto', String(PROTO)]);
    // A bridge with an enslaved veth (a container's link): IFLA_MASTER.
    k.ip(['link', 'add', 'tb0', 'type', 'bridge']);
    k.ip(['link', 'add', 'tv0', 'type', 'veth', 'peer', 'name', 'tv1']);
    k.ip(['link', 'set', 'tv0', 'master', 'tb0']);
  });

  afterAll(() => k?.destroy());

  it('dump agrees with ip -json for links, addresses, routes (all tables but local) and rules', async () => {
    const s = await dump();

    const ipLinks = ipJson<{ ifindex: number; ifname: string; address: string; flags: string[]; linkinfo?: { info_kind?: string } }[]>(['-d', 'link', 'show']);
    expect(s.links.map((l) => [l.index, l.name, l.mac, l.up, l.kind ?? null]).sort()).toEqual(
      ipLinks.map((l) => [l.ifindex, l.ifname, l.address, l.flags.includes('UP'), l.linkinfo?.info_kind ?? null]).sort());
    expect(s.links.find((l) => l.name === 'v1')).toMatchObject({ mac: '02:00:00:00:00:20', kind: 'veth', up: true });
    const byName = Object.fromEntries(ipLinks.map((l) => [l.ifname, l.ifindex]));
    const ipMasters = ipJson<{ ifname: string; master?: string }[]>(['link', 'show']).filter((l) => l.master !== undefined);
    expect(ipMasters.map((l) => l.ifname)).toEqual(['tv0']);
    expect(s.links.filter((l) => l.master !== undefined).map((l) => [l.name, l.master])).toEqual(ipMasters.map((l) => [l.ifname, byName[l.master ?? '']]));

    const ipAddrs = ipJson<{ ifindex: number; addr_info: { family: string; local: string; prefixlen: number; noprefixroute?: boolean }[] }[]>(['addr', 'show']);
    const expected = ipAddrs.flatMap((l) => l.addr_info.map((a) => [l.ifindex, a.family === 'inet' ? 4 : 6, a.local, a.prefixlen, a.noprefixroute === true]));
    expect(s.addresses.map((a) => [a.ifindex, a.family, a.address, a.prefixLen, a.noPrefixRoute === true]).sort()).toEqual(expected.sort());
    expect(s.addresses).toContainEqual({ ifindex: ifindex.v1, family: 4, address: '10.0.2.20', prefixLen: 24, noPrefixRoute: true });

    expect(s.routes.filter((r) => r.family === 4).map(routeKey).sort()).toEqual(ipRoutes(4));
    expect(s.routes.filter((r) => r.family === 6).map(routeKey).sort()).toEqual(ipRoutes(6));
    expect(s.routes.some((r) => r.table === 255)).toBe(false);
    // A table above 255 is read from RTA_TABLE, not from the 8-bit field (which says 252).
    expect(s.routes).toContainEqual(route({ gateway: '10.0.1.1', ifindex: ifindex.v0 }));
    expect(s.routes).toContainEqual(route({ family: 6, dst: '::/0', gateway: 'fd00:1::1', ifindex: ifindex.v0, metric: 1024 }));

    expect(s.rules.filter((r) => r.family === 4).map(ruleKey).sort()).toEqual(ipRuleKeys(4));
    expect(s.rules.filter((r) => r.family === 6).map(ruleKey).sort()).toEqual(ipRuleKeys(6));
    expect(s.rules).toContainEqual(rule({ src: '10.0.1.10/32' }));
    expect(s.rules).toContainEqual(rule({ priority: 10200, protocol: 0, fwmark: 0x80, fwmask: 0xff }));
    expect(s.rules).toContainEqual(rule({ family: 6, src: 'fd00:1::10/128' }));
  });

  it('adds and deletes addresses, routes in table 10001 and rules (from, to, fwmark/mask) as ip shows them', async () => {
    const addr = { ifindex: ifindex.v1 ?? 0, family: 4 as const, address: '10.0.2.21', prefixLen: 24, noPrefixRoute: true };
    const addr6 = { ifindex: ifindex.v1 ?? 0, family: 6 as const, address: 'fd00:2::21', prefixLen: 64, noPrefixRoute: false };
    const subnet = route({ table: 10002, dst: '10.0.2.0/24', ifindex: ifindex.v1, scope: 253, prefsrc: '10.0.2.21' });
    const dflt = route({ table: 10002, gateway: '10.0.2.1', ifindex: ifindex.v1 });
    const rules = [
      rule({ table: 10002, src: '10.0.2.21/32', priority: 10101 }),
      rule({ table: 254, dst: '172.17.0.0/16', priority: 10050 }),
      rule({ table: 10002, fwmark: 0x100, fwmask: 0xff00, priority: 10201 }),
    ];
    const adds: Change[] = [
      { op: 'add-address', address: addr, linkName: 'v1', reason: 't' },
      { op: 'add-address', address: addr6, linkName: 'v1', reason: 't' },
      { op: 'add-route', route: subnet, linkName: 'v1', reason: 't' },
      { op: 'add-route', route: dflt, linkName: 'v1', reason: 't' },
      ...rules.map((r): Change => ({ op: 'add-rule', rule: r, reason: 't' })),
    ];
    expect(await apply(adds)).toEqual({ applied: adds.length, failed: [] });

    const a = ipJson<{ addr_info: { local: string; prefixlen: number; noprefixroute?: boolean }[] }[]>(['addr', 'show', 'dev', 'v1']);
    expect(a[0]?.addr_info).toContainEqual(expect.objectContaining({ local: '10.0.2.21', prefixlen: 24, noprefixroute: true }));
    expect(a[0]?.addr_info).toContainEqual(expect.objectContaining({ local: 'fd00:2::21', prefixlen: 64 }));
    expect(ipRoutes(4)).toEqual(expect.arrayContaining([routeKey(subnet), routeKey(dflt)]));
    expect(ipRuleKeys(4)).toEqual(expect.arrayContaining(rules.map(ruleKey)));
    // The 172.17/16 rule says "lookup main"; `to` came out as a destination selector, not a source.
    expect(ipRules(4)).toContainEqual(expect.objectContaining({ priority: 10050, src: 'all', dst: '172.17.0.0', dstlen: 16, table: '254' }));

    const dumped = await dump();
    expect(dumped.routes).toEqual(expect.arrayContaining([subnet, dflt]));
    expect(dumped.rules).toEqual(expect.arrayContaining(rules));

    const dels: Change[] = [
      ...rules.map((r): Change => ({ op: 'del-rule', rule: r, reason: 't' })),
      { op: 'del-route', route: dflt, linkName: 'v1', reason: 't' },
      { op: 'del-route', route: subnet, linkName: 'v1', reason: 't' },
      { op: 'del-address', address: addr, linkName: 'v1', reason: 't' },
      { op: 'del-address', address: addr6, linkName: 'v1', reason: 't' },
    ];
    expect(await apply(dels)).toEqual({ applied: dels.length, failed: [] });
    expect(ipRoutes(4)).not.toContain(routeKey(dflt));
    expect(ipRoutes(4)).not.toContain(routeKey(subnet));
    for (const r of rules) expect(ipRuleKeys(4)).not.toContain(ruleKey(r));
    const after = ipJson<{ addr_info: { local: string }[] }[]>(['addr', 'show', 'dev', 'v1']);
    expect(after[0]?.addr_info.map((x) => x.local)).not.toContain('10.0.2.21');
    expect(after[0]?.addr_info.map((x) => x.local)).not.toContain('fd00:2::21');
  });

  it('needs no onlink: the gateway is valid through the subnet route in the same table, ENETUNREACH without it', async () => {
    // 10.0.2.20/24 on v1 is noprefixroute: main has no route to 10.0.2.0/24.
    const dflt = route({ table: 10003, gateway: '10.0.2.1', ifindex: ifindex.v1 });
    const subnet = route({ table: 10003, dst: '10.0.2.0/24', ifindex: ifindex.v1, scope: 253 });
    const without = await apply([{ op: 'add-route', route: dflt, linkName: 'v1', reason: 't' }]);
    expect(without.failed.map((f) => f.code)).toEqual(['ENETUNREACH']);
    expect(without.failed[0]?.message).toBe('add route default via 10.0.2.1 dev v1 table 10003 proto 236: ENETUNREACH');
    const withSubnet = await apply([
      { op: 'add-route', route: subnet, linkName: 'v1', reason: 't' },
      { op: 'add-route', route: dflt, linkName: 'v1', reason: 't' },
    ]);
    expect(withSubnet).toEqual({ applied: 2, failed: [] });
    expect(ipRoutes(4)).toContain(routeKey(dflt));
  });

  it('adding an identical rule twice leaves one rule (EEXIST counts as done)', async () => {
    const r = rule({ src: '10.0.1.30/32', priority: 10102 });
    const out = await apply([{ op: 'add-rule', rule: r, reason: 't' }, { op: 'add-rule', rule: r, reason: 't' }]);
    expect(out).toEqual({ applied: 2, failed: [] });
    expect(ipRuleKeys(4).filter((x) => x === ruleKey(r))).toHaveLength(1);
  });

  it('deleting an owned rule leaves a foreign rule with the same selector and another protocol untouched', async () => {
    const ours = rule({ src: '10.0.1.40/32', priority: 10103 });
    const foreign = { ...ours, protocol: 99 };
    k.ip(['rule', 'add', 'from', '10.0.1.40', 'lookup', '10001', 'pref', '10103', 'proto', '99']);
    expect((await apply([{ op: 'add-rule', rule: ours, reason: 't' }])).failed).toEqual([]);
    expect(ipRuleKeys(4)).toEqual(expect.arrayContaining([ruleKey(ours), ruleKey(foreign)]));
    expect(await apply([{ op: 'del-rule', rule: ours, reason: 't' }])).toEqual({ applied: 1, failed: [] });
    const keys = ipRuleKeys(4);
    expect(keys).toContain(ruleKey(foreign));
    expect(keys).not.toContain(ruleKey(ours));
    // Deleting ours again: the kernel would find only the foreign one, so nothing is deleted (ENOENT: done).
    expect(await apply([{ op: 'del-rule', rule: ours, reason: 't' }])).toEqual({ applied: 1, failed: [] });
    expect(ipRuleKeys(4)).toContain(ruleKey(foreign));
  });

  it('left-out selectors are not wildcards: no false EEXIST, and a delete never removes a more specific rule', async () => {
    const specific = rule({ src: '10.0.1.50/32', priority: 10104, table: 10004 });
    const fromAll = rule({ priority: 10104, table: 10004 });
    expect((await apply([{ op: 'add-rule', rule: specific, reason: 't' }])).failed).toEqual([]);
    // The kernel's EXCL check ignores the missing source and says EEXIST: reported as a conflict, not as done.
    const add = await apply([{ op: 'add-rule', rule: fromAll, reason: 't' }]);
    expect(add.failed.map((f) => f.code)).toEqual(['ECONFLICT']);
    expect(add.failed[0]?.message).toContain('add rule from all lookup 10004 pref 10104 proto 236: ECONFLICT');
    // `from all` is not there, and a delete of it would make the kernel remove `from 10.0.1.50`: it is not
    // sent, and counts as done (ENOENT).
    expect(await apply([{ op: 'del-rule', rule: fromAll, reason: 't' }])).toEqual({ applied: 1, failed: [] });
    expect(ipRuleKeys(4)).toContain(ruleKey(specific));
  });

  it('EEXIST on add and ESRCH/ENOENT/EADDRNOTAVAIL on delete count as done', async () => {
    const existing = route({ gateway: '10.0.1.1', ifindex: ifindex.v0 });
    const out = await apply([
      { op: 'add-route', route: existing, linkName: 'v0', reason: 't' },
      { op: 'add-address', address: { ifindex: ifindex.v0 ?? 0, family: 4, address: '10.0.1.10', prefixLen: 24, noPrefixRoute: false }, linkName: 'v0', reason: 't' },
      { op: 'del-route', route: route({ dst: '10.55.0.0/16', ifindex: ifindex.v0, table: 10001 }), linkName: 'v0', reason: 't' },
      { op: 'del-rule', rule: rule({ src: '10.55.0.1/32', priority: 10199 }), reason: 't' },
      { op: 'del-address', address: { ifindex: ifindex.v0 ?? 0, family: 4, address: '10.55.0.1', prefixLen: 24 }, linkName: 'v0', reason: 't' },
    ]);
    expect(out).toEqual({ applied: 5, failed: [] });
  });

  it('an add that fails skips the deletions that depend on it (same table or source), and only those', async () => {
    const owned = rule({ src: '10.0.1.60/32', priority: 10105 });
    const ownedRoute = route({ table: 10001, dst: '10.66.0.0/16', gateway: '10.0.1.1', ifindex: ifindex.v0 });
    const unrelated = rule({ src: '10.0.1.62/32', priority: 10107, table: 10002 });
    expect((await apply([
      { op: 'add-rule', rule: owned, reason: 't' },
      { op: 'add-route', route: ownedRoute, linkName: 'v0', reason: 't' },
      { op: 'add-rule', rule: unrelated, reason: 't' },
    ])).failed).toEqual([]);
    const out = await apply([
      // The new path of 10.0.1.60 (table 10005) cannot be built: its old rule to 10001 stays, and so does 10001.
      { op: 'add-route', route: route({ table: 10005, dst: '10.77.0.0/16', ifindex: 4242 }), reason: 'link gone' },
      { op: 'add-rule', rule: rule({ src: '10.0.1.60/32', priority: 10106, table: 10005 }), reason: 'still tried' },
      { op: 'del-rule', rule: owned, reason: 't' },
      { op: 'del-route', route: ownedRoute, linkName: 'v0', reason: 't' },
      // Another ENI's table: nothing to do with the failure, deleted.
      { op: 'del-rule', rule: unrelated, reason: 't' },
    ]);
    expect(out.applied).toBe(2);
    expect(out.failed.map((f) => [f.change.op, f.code])).toEqual([['add-route', 'ENODEV'], ['del-rule', 'ESKIPPED'], ['del-route', 'ESKIPPED']]);
    expect(out.failed[1]?.message).toContain('not attempted');
    expect(ipRuleKeys(4)).toContain(ruleKey(owned));
    expect(ipRoutes(4)).toContain(routeKey(ownedRoute));
    expect(ipRuleKeys(4)).not.toContain(ruleKey(unrelated));
    k.ip(['rule', 'del', 'pref', '10106']);
  });

  it('a plan larger than one batch: each failure is attributed to its own object, EEXIST is re-checked, later deletions are skipped', async () => {
    const v1 = ifindex.v1 ?? 0;
    const addr = (i: number, dev = v1): Change => ({
      op: 'add-address', address: { ifindex: dev, family: 4, address: `10.0.9.${i}`, prefixLen: 24, noPrefixRoute: true }, linkName: 'v1', reason: 't',
    });
    // 150 address adds (three batches of 64); three of them name a link that does not exist, across batch boundaries.
    const bad = new Set([10, 64, 140]);
    const adds = Array.from({ length: 150 }, (_, i) => addr(i + 1, bad.has(i) ? 4243 : v1));
    const equal = rule({ src: '10.0.1.10/32' }); // made in beforeAll: EEXIST, an equal rule is there
    const clash = rule({ priority: 10100 }); // `from all` at the same pref and table: EEXIST, but another rule
    const fresh = rule({ src: '10.0.9.200/32', priority: 10107 });
    const owned = rule({ src: '10.0.9.201/32', priority: 10108 });
    expect((await apply([{ op: 'add-rule', rule: owned, reason: 't' }])).failed).toEqual([]);
    const plan: Change[] = [
      ...adds,
      { op: 'add-rule', rule: equal, reason: 't' },
      { op: 'add-rule', rule: clash, reason: 't' },
      { op: 'add-rule', rule: fresh, reason: 't' },
      { op: 'del-rule', rule: owned, reason: 't' },
    ];
    const { stdout } = await runInNs(k.ns, KERNEL_TOOL, ['apply-existed'], { input: JSON.stringify(plan) });
    const out = JSON.parse(stdout) as ApplyOut & { existed: number[] };
    const at = (c: Change): number => plan.findIndex((p) => JSON.stringify(p) === JSON.stringify(c));
    expect(out.failed.map((f) => [at(f.change), f.code])).toEqual([
      [10, 'ENODEV'], [64, 'ENODEV'], [140, 'ENODEV'], [151, 'ECONFLICT'], [153, 'ESKIPPED'],
    ]);
    expect(out.failed[0]?.message).toContain('add address 10.0.9.11/24 dev v1 noprefixroute: ENODEV');
    expect(out.existed).toEqual([150]);
    expect(out.applied).toBe(150 - 3 + 2);
    const present = ipJson<{ ifname: string; addr_info: { local: string }[] }[]>(['-4', 'addr', 'show', 'dev', 'v1'])
      .flatMap((l) => l.addr_info.map((a) => a.local)).filter((a) => a.startsWith('10.0.9.'));
    expect(present.sort()).toEqual(adds.map((c, i) => (bad.has(i) || c.op !== 'add-address' ? '' : c.address.address)).filter((a) => a !== '').sort());
    const keys = ipRuleKeys(4);
    expect(keys).toEqual(expect.arrayContaining([ruleKey(fresh), ruleKey(owned), ruleKey(equal)]));
    expect(keys).not.toContain(ruleKey(clash));
  });

  it('a run of rule deletions is checked against one dump, updated delete after delete', async () => {
    const wide = rule({ src: '10.0.9.211/32', priority: 10110 });
    const specific = rule({ src: '10.0.9.211/32', dst: '10.9.0.0/16', priority: 10110 });
    const foreign = { ...wide, priority: 10111, protocol: 99 };
    k.ip(['rule', 'add', 'from', '10.0.9.211', 'lookup', '10001', 'pref', '10110', 'proto', String(PROTO)]);
    k.ip(['rule', 'add', 'from', '10.0.9.211', 'to', '10.9.0.0/16', 'lookup', '10001', 'pref', '10110', 'proto', String(PROTO)]);
    k.ip(['rule', 'add', 'from', '10.0.9.211', 'lookup', '10001', 'pref', '10111', 'proto', '99']);
    const out = await apply([
      { op: 'del-rule', rule: wide, reason: 't' },
      { op: 'del-rule', rule: specific, reason: 't' },
      { op: 'del-rule', rule: wide, reason: 'gone by then: ENOENT, done, not sent' },
      { op: 'del-rule', rule: { ...foreign, protocol: PROTO }, reason: 'not there with our protocol' },
    ]);
    expect(out).toEqual({ applied: 4, failed: [] });
    const keys = ipRuleKeys(4);
    expect(keys).not.toContain(ruleKey(specific));
    expect(keys).not.toContain(ruleKey(wide));
    expect(keys).toContain(ruleKey(foreign));
  });

  it('replace-route swaps the gateway of an owned route in place; link-up sets the link up', async () => {
    const before = route({ table: 10001, dst: '10.88.0.0/16', gateway: '10.0.1.1', ifindex: ifindex.v0 });
    const after = { ...before, gateway: '10.0.1.2' };
    k.ip(['link', 'set', 'v1p', 'down']);
    const out = await apply([
      { op: 'add-route', route: before, linkName: 'v0', reason: 't' },
      { op: 'replace-route', route: after, previous: before, linkName: 'v0', reason: 't' },
      { op: 'link-up', link: { index: ifindex.v1p ?? 0, name: 'v1p', mac: '02:00:00:00:00:21', up: false }, reason: 't' },
    ]);
    expect(out).toEqual({ applied: 3, failed: [] });
    const keys = ipRoutes(4);
    expect(keys).toContain(routeKey(after));
    expect(keys).not.toContain(routeKey(before));
    expect(ipJson<{ flags: string[] }[]>(['link', 'show', 'v1p'])[0]?.flags).toContain('UP');
  });
});
