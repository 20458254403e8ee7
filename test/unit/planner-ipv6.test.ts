// The planner for IPv6, delegated prefixes and instances with several network cards, checked against a model of
// the kernel that reports routes the way rtnetlink does (IPv6: metric 1024 when none was given, scope universe)
// and refuses an add whose slot is taken (NLM_F_EXCL), as the kernel does.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultConfig, type Config } from '../../src/config';
import { buildDesired, isLinkLocal6, learnedIpv6Router, prefixAddresses, tableFor } from '../../src/core/desired';
import { diff, ownedAddressKey, routeKey, routeSlot, ruleKey } from '../../src/core/diff';
import { formatChange } from '../../src/core/format';
import type { EniInfo, ImdsSnapshot, KernelLink, KernelRoute, KernelState } from '../../src/core/types';
import { applyKernel, eni } from '../helpers/kernel-model';

const config = defaultConfig({});
const P = config.protocol;
const RA = 9; // RTPROT_RA
const SUBNET6 = '2600:1f18:aaaa:bb01::/64';
const ROUTER = 'fe80::ec:2aff:fe00:101';

const eth0: KernelLink = { index: 2, name: 'eth0', mac: '02:00:00:00:00:10', up: true };
const eth1: KernelLink = { index: 3, name: 'eth1', mac: '02:00:00:00:00:20', up: true };

/** The route a router advertisement leaves in main (`default via fe80::… dev ethN proto ra metric 1024`). */
function raDefault(link: KernelLink, gateway = ROUTER, table = 254, metric = 1024): KernelRoute {
  return { family: 6, table, dst: '::/0', gateway, ifindex: link.index, protocol: RA, scope: 0, type: 1, metric };
}

const dual: ImdsSnapshot = {
  primaryMac: eth0.mac,
  enis: [
    eni(eth0.mac, 0, ['10.0.1.10'], { ipv6s: ['2600:1f18:aaaa:bb01::10', '2600:1f18:aaaa:bb01::11'], subnetIpv6Cidrs: [SUBNET6] }),
    eni(eth1.mac, 1, ['10.0.1.20'], {
      ipv6s: ['2600:1f18:aaaa:bb01:0:0:0:20'], ipv6Prefixes: ['2600:1f18:aaaa:bb01:1234::/80'], subnetIpv6Cidrs: [SUBNET6],
    }),
  ],
  pending: [],
};

function converge(snapshot: ImdsSnapshot, observed: KernelState, cfg: Config = config, owned = new Set<string>()) {
  const desired = buildDesired(snapshot, observed, cfg);
  const first = diff({ desired, observed, protocol: P, ownedAddresses: owned });
  const after = applyKernel(observed, first.plan);
  const second = diff({ desired: buildDesired(snapshot, after, cfg), observed: after, protocol: P, ownedAddresses: owned });
  return { desired, first, after, second };
}

describe('IPv6 in the planner', () => {
  const kernel: KernelState = { links: [eth0, eth1], addresses: [], routes: [raDefault(eth0, ROUTER, 254, 512), raDefault(eth1)], rules: [] };

  it('plans /128 addresses without DAD on every ENI, source rules and a table for the secondary ENI', () => {
    const d = buildDesired(dual, kernel, config);
    expect(d.addresses.filter((a) => a.family === 6)).toEqual([
      { ifindex: 2, family: 6, address: '2600:1f18:aaaa:bb01::10', prefixLen: 128, noPrefixRoute: true, noDad: true },
      { ifindex: 2, family: 6, address: '2600:1f18:aaaa:bb01::11', prefixLen: 128, noPrefixRoute: true, noDad: true },
      { ifindex: 3, family: 6, address: '2600:1f18:aaaa:bb01::20', prefixLen: 128, noPrefixRoute: true, noDad: true },
    ]);
    expect(d.problems).toEqual([]);
    const { plan } = diff({ desired: d, observed: kernel, protocol: P, ownedAddresses: new Set() });
    expect(plan.map(formatChange)).toEqual([
      'ip -6 address add 2600:1f18:aaaa:bb01::10/128 dev eth0 noprefixroute nodad',
      'ip -6 address add 2600:1f18:aaaa:bb01::11/128 dev eth0 noprefixroute nodad',
      'ip address add 10.0.1.20/24 dev eth1 noprefixroute',
      'ip -6 address add 2600:1f18:aaaa:bb01::20/128 dev eth1 noprefixroute nodad',
      `ip route add 10.0.1.0/24 dev eth1 src 10.0.1.20 table 10001 proto ${P} scope link`,
      `ip route add default via 10.0.1.1 dev eth1 table 10001 proto ${P}`,
      // A link-local gateway with its device needs no on-link route first; the order is kept anyway.
      `ip -6 route add 2600:1f18:aaaa:bb01::/64 dev eth1 table 10001 proto ${P}`,
      `ip -6 route add default via ${ROUTER} dev eth1 table 10001 proto ${P}`,
      `ip rule add from 10.0.1.20/32 lookup 10001 pref 10100 proto ${P}`,
      `ip -6 rule add from 2600:1f18:aaaa:bb01::20/128 lookup 10001 pref 10100 proto ${P}`,
      `ip -6 rule add from 2600:1f18:aaaa:bb01:1234::/80 lookup 10001 pref 10100 proto ${P}`,
    ]);
  });

  it('an IPv6-only instance: the primary gets its IPv6s, the secondary its table, IPv6 rules, subnet and RA default route, and no IPv4 at all', () => {
    const only6: ImdsSnapshot = {
      primaryMac: eth0.mac,
      enis: [
        eni(eth0.mac, 0, [], { subnetIpv4Cidr: '', ipv6s: ['2600:1f18:aaaa:bb01::10'], subnetIpv6Cidrs: [SUBNET6] }),
        eni(eth1.mac, 1, [], { subnetIpv4Cidr: '', ipv6s: ['2600:1f18:aaaa:bb01::20'], ipv6Prefixes: ['2600:1f18:aaaa:bb01:1234::/80'], subnetIpv6Cidrs: [SUBNET6] }),
      ],
      pending: [],
    };
    const { desired, first, second } = converge(only6, kernel);
    expect(desired.problems).toEqual([]);
    expect(first.plan.map(formatChange)).toEqual([
      'ip -6 address add 2600:1f18:aaaa:bb01::10/128 dev eth0 noprefixroute nodad',
      'ip -6 address add 2600:1f18:aaaa:bb01::20/128 dev eth1 noprefixroute nodad',
      `ip -6 route add 2600:1f18:aaaa:bb01::/64 dev eth1 table 10001 proto ${P}`,
      `ip -6 route add default via ${ROUTER} dev eth1 table 10001 proto ${P}`,
      `ip -6 rule add from 2600:1f18:aaaa:bb01::20/128 lookup 10001 pref 10100 proto ${P}`,
      `ip -6 rule add from 2600:1f18:aaaa:bb01:1234::/80 lookup 10001 pref 10100 proto ${P}`,
    ]);
    expect(second.plan).toEqual([]);
  });

  it('converges against the kernel model: IPv6 routes come back with metric 1024 and are not planned again', () => {
    const { first, second, after } = converge(dual, kernel);
    expect(first.plan.length).toBeGreaterThan(0);
    expect(second.plan).toEqual([]);
    expect(after.routes.filter((r) => r.protocol === P && r.family === 6).map((r) => r.metric)).toEqual([1024, 1024]);
  });

  it('does not add an address the primary ENI has already (DHCPv6), whatever its prefix length', () => {
    const withDhcp: KernelState = { ...kernel, addresses: [{ ifindex: 2, family: 6, address: '2600:1f18:aaaa:bb01::10', prefixLen: 128 }] };
    const { first } = converge(dual, withDhcp);
    expect(first.plan.map(formatChange).filter((c) => c.includes('dev eth0'))).toEqual([
      'ip -6 address add 2600:1f18:aaaa:bb01::11/128 dev eth0 noprefixroute nodad',
    ]);
  });

  it('without a learned router: no IPv6 default route, and says why; the route follows the router when it changes', () => {
    const noRa: KernelState = { ...kernel, routes: [raDefault(eth0)] };
    const d = buildDesired(dual, noRa, config);
    expect(d.routes.filter((r) => r.family === 6).map((r) => r.dst)).toEqual([SUBNET6]);
    expect(d.problems).toEqual([expect.stringContaining('no IPv6 router learned on eth1')]);
    // A link that is down gets no complaint yet: it is brought up by this plan and the RA follows.
    expect(buildDesired(dual, { ...noRa, links: [eth0, { ...eth1, up: false }] }, config).problems).toEqual([]);

    const { after } = converge(dual, kernel);
    const moved = { ...after, routes: [...after.routes.filter((r) => r.protocol === P), raDefault(eth1, 'fe80::1:2')] };
    const { plan } = diff({ desired: buildDesired(dual, moved, config), observed: moved, protocol: P, ownedAddresses: new Set() });
    expect(plan.map(formatChange)).toEqual([`ip -6 route replace default via fe80::1:2 dev eth1 table 10001 proto ${P}`]);
  });

  it('learns the router from main first, then from another table; never from its own routes or a global gateway', () => {
    const own: KernelRoute = { ...raDefault(eth1, 'fe80::99', 10001), protocol: P };
    const global: KernelRoute = raDefault(eth1, '2600:1f18:aaaa:bb01::1');
    expect(learnedIpv6Router([own, global], eth1.index, P)).toBeUndefined();
    expect(learnedIpv6Router([own, raDefault(eth1, 'fe80::7', 10001), raDefault(eth1, 'fe80::8')], eth1.index, P)).toBe('fe80::8');
    expect(learnedIpv6Router([raDefault(eth1, 'fe80::7', 10001), raDefault(eth0, 'fe80::8')], eth1.index, P)).toBe('fe80::7');
    expect(isLinkLocal6('fe80::1')).toBe(true);
    expect(isLinkLocal6('febf::1')).toBe(true);
    expect(isLinkLocal6('fec0::1')).toBe(false);
    expect(isLinkLocal6('10.0.0.1')).toBe(false);
  });

  it('a router-advertised default route in the ENI table itself is a foreign route in the way, left alone', () => {
    const networkd: KernelState = { ...kernel, routes: [raDefault(eth0), raDefault(eth1, ROUTER, 10001)] };
    const { first, second } = converge(dual, networkd);
    expect(first.conflicts).toEqual([expect.stringContaining('table 10001: a route to ::/0')]);
    expect(first.plan.some((c) => c.op === 'add-route' && c.route.dst === '::/0')).toBe(false);
    expect(second.plan).toEqual([]);
  });

  it('an owned IPv6 route the kernel reports with metric 1024 is the same slot as a desired one without a metric', () => {
    const desired: KernelRoute = { family: 6, table: 10001, dst: '::/0', gateway: ROUTER, ifindex: 3, protocol: P, scope: 0, type: 1 };
    expect(routeSlot(desired)).toBe(routeSlot({ ...desired, metric: 1024 }));
    expect(routeKey(desired)).toBe(routeKey({ ...desired, metric: 1024 }));
    expect(routeSlot(desired)).not.toBe(routeSlot({ ...desired, metric: 0 }));
    // IPv4 keeps its own default (0), and IPv6 has no scope.
    expect(routeSlot({ ...desired, family: 4, dst: '0.0.0.0/0' })).toBe(routeSlot({ ...desired, family: 4, dst: '0.0.0.0/0', metric: 0 }));
    expect(routeKey({ ...desired, scope: 253 })).toBe(routeKey(desired));
  });

  it('removes the IPv6 address and rule of an IPv6 that IMDS no longer lists, only when ec2netd added it', () => {
    const { after } = converge(dual, kernel);
    const owned = new Set([ownedAddressKey(eth1.mac, '2600:1f18:aaaa:bb01::20')]);
    const fewer: ImdsSnapshot = { ...dual, enis: [dual.enis[0]!, { ...dual.enis[1]!, ipv6s: [] }] };
    const { plan } = diff({ desired: buildDesired(fewer, after, config), observed: after, protocol: P, ownedAddresses: owned });
    expect(plan.map(formatChange)).toEqual([
      `ip -6 rule del from 2600:1f18:aaaa:bb01::20/128 lookup 10001 pref 10100 proto ${P}`,
      'ip -6 address del 2600:1f18:aaaa:bb01::20/128 dev eth1',
    ]);
  });
});

describe('IPv4 prefix delegation as host addresses (ipv4PrefixAddresses)', () => {
  const snap: ImdsSnapshot = {
    primaryMac: eth0.mac,
    enis: [eni(eth0.mac, 0, ['10.0.1.10']), eni(eth1.mac, 1, ['10.0.1.20'], { ipv4Prefixes: ['10.0.1.64/28'] })],
    pending: [],
  };
  const kernel: KernelState = { links: [eth0, eth1], addresses: [], routes: [], rules: [] };
  const on: Config = { ...config, ipv4PrefixAddresses: true };

  it('is off by default: the prefix is a rule only', () => {
    const d = buildDesired(snap, kernel, config);
    expect(d.addresses.map((a) => a.address)).toEqual(['10.0.1.20']);
    expect(d.rules.map((r) => r.src)).toContain('10.0.1.64/28');
  });

  it('when on, puts each of the 16 addresses on the ENI as a /32, and takes them away with the prefix', () => {
    const { desired, after, second } = converge(snap, kernel, on);
    const hosts = desired.addresses.filter((a) => a.prefixLen === 32);
    expect(hosts.map((a) => a.address)).toEqual(prefixAddresses('10.0.1.64/28'));
    expect(hosts).toHaveLength(16);
    expect(hosts.every((a) => a.ifindex === eth1.index && a.noPrefixRoute)).toBe(true);
    expect(second.plan).toEqual([]);
    const owned = new Set(hosts.map((a) => ownedAddressKey(eth1.mac, a.address)));
    const gone: ImdsSnapshot = { ...snap, enis: [snap.enis[0]!, { ...snap.enis[1]!, ipv4Prefixes: [] }] };
    const { plan } = diff({ desired: buildDesired(gone, after, on), observed: after, protocol: P, ownedAddresses: owned });
    expect(plan.filter((c) => c.op === 'del-address')).toHaveLength(16);
    expect(plan.filter((c) => c.op === 'del-rule').map(formatChange)).toEqual([`ip rule del from 10.0.1.64/28 lookup 10001 pref 10100 proto ${P}`]);
  });

  it('expands only small prefixes, and never repeats an address the ENI has anyway', () => {
    expect(prefixAddresses('10.0.1.64/28')[15]).toBe('10.0.1.79');
    expect(prefixAddresses('10.0.1.0/24')).toEqual([]);
    expect(prefixAddresses('2600::/80')).toEqual([]);
    const overlapping: ImdsSnapshot = { ...snap, enis: [snap.enis[0]!, { ...snap.enis[1]!, ipv4s: ['10.0.1.20', '10.0.1.65'], ipv4Prefixes: ['10.0.1.64/28'] }] };
    const addrs = buildDesired(overlapping, kernel, on).addresses.map((a) => `${a.address}/${a.prefixLen}`);
    expect(addrs.filter((a) => a.startsWith('10.0.1.65/'))).toEqual(['10.0.1.65/24']);
  });
});

describe('several network cards', () => {
  /** 2 cards × 15 ENIs, card 0 device 0 the primary; MACs 02:00:00:00:<card>:<dev>. */
  function bigInstance() {
    const enis: EniInfo[] = [];
    const links: KernelLink[] = [];
    for (const card of [0, 1]) {
      for (let dev = 0; dev < 15; dev++) {
        const mac = `02:00:00:00:0${card}:${dev.toString(16).padStart(2, '0')}`;
        const n = card * 15 + dev;
        enis.push(eni(mac, dev, [`10.0.${card + 1}.${10 + dev}`, `10.0.${card + 1}.${100 + dev}`], {
          networkCard: card, interfaceId: `eni-${card}${dev.toString(16)}0`, subnetIpv4Cidr: `10.0.${card + 1}.0/24`,
          ipv6s: [`2600:1f18:aaaa:bb0${card + 1}::${(10 + dev).toString(16)}`], subnetIpv6Cidrs: [`2600:1f18:aaaa:bb0${card + 1}::/64`],
        }));
        links.push({ index: 100 + n, name: `ens${5 + n}`, mac, up: n % 3 !== 0 });
      }
    }
    const routes = links.map((l) => raDefault(l, `fe80::${l.index.toString(16)}`));
    return { snapshot: { primaryMac: enis[0]!.mac, enis, pending: [] } as ImdsSnapshot, kernel: { links, addresses: [], routes, rules: [] } as KernelState };
  }

  it('gives each of 29 secondary ENIs the table 10000 + 100 * card + device, device 0 on card 1 included', () => {
    const { snapshot, kernel } = bigInstance();
    const d = buildDesired(snapshot, kernel, config);
    const tables = d.enis.flatMap((e) => (e.table === undefined ? [] : [e.table]));
    expect(tables).toHaveLength(29);
    expect(new Set(tables).size).toBe(29);
    expect(tables).toEqual([...Array.from({ length: 14 }, (_, i) => 10001 + i), ...Array.from({ length: 15 }, (_, i) => 10100 + i)]);
    expect(d.skipped).toEqual([]);
    expect(d.problems).toEqual([]);
    for (const e of d.enis.filter((x) => x.table !== undefined)) {
      expect(e.table).toBe(tableFor(e.eni, config));
      const inTable = d.routes.filter((r) => r.table === e.table);
      expect(inTable.every((r) => r.ifindex === e.link.index)).toBe(true);
      expect(inTable.map((r) => r.dst).sort()).toEqual(['0.0.0.0/0', '::/0', e.eni.subnetIpv4Cidr, e.eni.subnetIpv6Cidrs[0]!].sort());
      expect(d.rules.filter((r) => r.table === e.table)).toHaveLength(3);
    }
  });

  it('container marks use the same (card, device) slots: card 1 needs 7 mask bits (the default has 12), and a narrow mask says so only with a container network', () => {
    const { snapshot, kernel } = bigInstance();
    const docker: KernelLink = { index: 90, name: 'docker0', mac: '02:42:00:00:00:01', up: true, kind: 'bridge' };
    const withDocker: KernelState = { ...kernel, links: [...kernel.links, docker], addresses: [{ ifindex: 90, family: 4, address: '172.17.0.1', prefixLen: 16 }] };
    const narrow: Config = { ...config, containers: { ...config.containers, markMask: 0x1f00 } };
    expect(buildDesired(snapshot, withDocker, narrow).problems).toEqual([expect.stringContaining('needs slot 100 (7 bits)')]);
    expect(buildDesired(snapshot, kernel, narrow).problems).toEqual([]);
    const d = buildDesired(snapshot, withDocker, config);
    expect(d.problems).toEqual([]);
    const marks = d.rules.filter((r) => r.fwmark !== undefined).map((r) => r.fwmark);
    expect(marks).toHaveLength(29);
    expect(new Set(marks).size).toBe(29);
  });

  it('converges in one plan and then holds still', () => {
    const { snapshot, kernel } = bigInstance();
    const { first, second } = converge(snapshot, kernel);
    expect(first.plan.filter((c) => c.op === 'add-rule')).toHaveLength(29 * 3);
    // Every third link is down; the primary's (ens5) is never brought up by ec2netd.
    expect(first.plan.filter((c) => c.op === 'link-up')).toHaveLength(9);
    expect(second.plan).toEqual([]);
  });

  it('an ENI of card 1 in a table of card 0 after a wrong reading moves to its table when IMDS corrects itself', () => {
    const { snapshot, kernel } = bigInstance();
    const wrong: ImdsSnapshot = { ...snapshot, enis: snapshot.enis.map((e) => (e.networkCard === 1 && e.deviceNumber === 14 ? { ...e, networkCard: 0 } : e)) };
    // Card 0 has no device 14, so the wrong reading would be planned: this is why the IMDS reader must not guess.
    expect(buildDesired(wrong, kernel, config).enis.some((e) => e.table === 10014)).toBe(true);
    const { after } = converge(wrong, kernel);
    const { plan } = diff({ desired: buildDesired(snapshot, after, config), observed: after, protocol: P, ownedAddresses: new Set() });
    expect(plan.filter((c) => c.op === 'add-rule').every((c) => c.op === 'add-rule' && c.rule.table === 10114)).toBe(true);
    expect(plan.filter((c) => c.op === 'del-rule').every((c) => c.op === 'del-rule' && c.rule.table === 10014)).toBe(true);
  });
});

// Property: arbitrary dual-stack instances with arbitrary kernel junk (IPv4 and IPv6, owned and foreign), applied
// through the kernel model, converge in one plan and never touch a foreign object.
const arbV6 = fc.integer({ min: 2, max: 0xfff }).map((n) => `2600:1f18:aaaa:bb01::${n.toString(16)}`);
const arbV4 = fc.integer({ min: 2, max: 250 }).map((n) => `10.0.1.${n}`);
const arbEni = (dev: number) =>
  fc.record({
    v4: fc.uniqueArray(arbV4, { minLength: 1, maxLength: 4 }), v6: fc.uniqueArray(arbV6, { maxLength: 4 }),
    prefix6: fc.boolean(), up: fc.boolean(), ra: fc.constantFrom('none', 'main', 'table'),
  }).map(({ v4, v6, prefix6, up, ra }) => ({
    info: eni(`02:00:00:00:02:${dev.toString(16).padStart(2, '0')}`, dev, v4, {
      ipv6s: v6, subnetIpv6Cidrs: [SUBNET6], ipv6Prefixes: prefix6 ? [`2600:1f18:aaaa:bb01:${(dev + 1).toString(16)}::/80`] : [],
    }),
    up, ra,
  }));
const arbJunkRoute = fc.record({
  family: fc.constant(6 as const), table: fc.integer({ min: 10000, max: 10004 }), dst: fc.constantFrom('::/0', SUBNET6, '2600:1f18:ffff::/48'),
  ifindex: fc.integer({ min: 10, max: 14 }), protocol: fc.constantFrom(P, RA, 3), scope: fc.constant(0), type: fc.constant(1),
  metric: fc.constantFrom(1024, 512), gateway: fc.option(fc.constantFrom('fe80::1', 'fe80::2'), { nil: undefined }),
}).map((r) => {
  const { gateway, ...rest } = r;
  return gateway === undefined ? rest : { ...rest, gateway };
});
const arbJunkRule = fc.record({
  family: fc.constant(6 as const), src: arbV6.map((ip) => `${ip}/128`), table: fc.integer({ min: 10000, max: 10004 }),
  priority: fc.constantFrom(10100, 500), protocol: fc.constantFrom(P, 3), action: fc.constant(1),
});

describe('IPv6 planner properties', () => {
  it('applying a plan through the kernel model, then planning again, yields nothing; foreign objects stay', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 5 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => arbEni(i)))),
      fc.array(arbJunkRoute, { maxLength: 8 }), fc.array(arbJunkRule, { maxLength: 8 }),
      (enis, junkRoutes, junkRules) => {
        const links = enis.map((e, i) => ({ index: 10 + i, name: `eth${i}`, mac: e.info.mac, up: e.up }));
        const ra = enis.flatMap((e, i) => (e.ra === 'none' ? [] : [raDefault(links[i]!, `fe80::${i + 10}`, e.ra === 'main' ? 254 : 20000 + i)]));
        const snap: ImdsSnapshot = { primaryMac: enis[0]!.info.mac, enis: enis.map((e) => e.info), pending: [] };
        const observed: KernelState = { links, addresses: [], routes: [...ra, ...junkRoutes], rules: junkRules };
        const { first, after, second } = converge(snap, observed);
        for (const c of first.plan) {
          if (c.op === 'del-rule') expect(c.rule.protocol).toBe(P);
          if (c.op === 'del-route' || c.op === 'replace-route') expect((c.op === 'del-route' ? c.route : c.previous).protocol).toBe(P);
        }
        expect(second.plan).toEqual([]);
        for (const foreign of [...junkRules, ...junkRoutes, ...ra].filter((o) => o.protocol !== P)) {
          expect([...after.rules, ...after.routes]).toContainEqual(foreign);
        }
        // Every IPv6 source of a secondary ENI that no other ENI lists has its rule.
        for (const e of enis.slice(1)) {
          const table = tableFor(e.info, config);
          for (const ip of e.info.ipv6s) {
            // An address two ENIs list goes to neither while neither holds it (one owner per address).
            if (enis.some((o) => o !== e && o.info.ipv6s.includes(ip))) continue;
            const wanted = { family: 6, priority: 10100, table, src: `${ip}/128`, action: 1 };
            const taken = junkRules.some((r) => r.protocol !== P && ruleKey(r) === ruleKey({ ...wanted, family: 6, protocol: P }));
            if (!taken) expect(after.rules).toContainEqual(expect.objectContaining({ ...wanted, protocol: P }));
          }
        }
      },
    ), { numRuns: 300 });
  });
});
