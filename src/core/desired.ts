// Desired state: what the kernel should hold, given what IMDS says and which links exist. Pure.
import type { Config } from '../config';
import { compareText } from './compare';
import { bridgeSubnets, buildContainerObjects, matchesBridgePattern, MarkSpaceError, type ContainerBridge } from './containers';
import { canonicalAddress, intToIpv4, ipv4ToInt, ipv6ToBigInt, isIPv6, networkOf, normalizeCidr, parseCidr, subnetGateway } from './ip';
import type {
  DesiredAddress, DesiredEni, DesiredState, EniInfo, ImdsSnapshot, KernelAddress, KernelLink, KernelRoute, KernelRule, KernelState,
} from './types';

export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RTN_UNICAST = 1;
export const FR_ACT_TO_TBL = 1;
export const RT_TABLE_MAIN = 254;

/** Link kinds that share an ENI's MAC without being the ENI itself (VLANs, bridges, bonds, macvlans). */
const STACKED_KINDS = new Set(['vlan', 'macvlan', 'macvtap', 'ipvlan', 'ipvtap', 'bridge', 'bond', 'team']);

/** Table number convention of amazon-ec2-net-utils and the VPC CNI. */
export function tableFor(eni: Pick<EniInfo, 'networkCard' | 'deviceNumber'>, config: Config): number {
  return config.tableBase + config.tablePerCard * eni.networkCard + eni.deviceNumber;
}

/** The link carrying an ENI: matched by MAC, never by name. */
export function linkForMac(links: readonly KernelLink[], mac: string): KernelLink | undefined {
  return links.find((l) => l.mac === mac && (l.kind === undefined || !STACKED_KINDS.has(l.kind)));
}

function subnetPrefix(eni: EniInfo): number {
  return parseCidr(eni.subnetIpv4Cidr)?.prefixLen ?? 32;
}

/** `first`: the ENI's primary private IPv4 as IMDS lists it (the first of local-ipv4s). */
function eniAddresses(eni: EniInfo, link: KernelLink, primary: boolean, config: Config, first = eni.ipv4s[0]): DesiredAddress[] {
  const prefix = subnetPrefix(eni);
  // The primary ENI's own address belongs to DHCP; ec2netd only adds its secondaries.
  const ips = primary ? eni.ipv4s.filter((ip) => ip !== first) : eni.ipv4s;
  const v4: DesiredAddress[] = ips.map((ip) => {
    const isFirst = !primary && ip === first;
    return {
      ifindex: link.index,
      family: 4,
      address: canonicalAddress(ip),
      prefixLen: isFirst || config.secondaryAddressPrefix === 'subnet' ? prefix : 32,
      // Secondary ENIs get no connected route in main: main keeps preferring the primary ENI
      // for the shared subnet (two connected routes would let traffic leave the wrong ENI).
      noPrefixRoute: !primary,
    };
  });
  const taken = new Set(v4.map((a) => a.address));
  if (!primary) taken.add(canonicalAddress(first ?? ''));
  // Delegated IPv4 prefixes as host addresses: opt-in (docs/ipv6.md, "IPv4 prefix delegation"). Every address of
  // the prefix as a /32: a /32 has no connected route, so neither main nor the ENI table changes.
  const prefixHosts: DesiredAddress[] = !config.ipv4PrefixAddresses ? [] : eni.ipv4Prefixes
    .flatMap((p) => prefixAddresses(p))
    .filter((address) => !taken.has(address))
    .map((address) => ({ ifindex: link.index, family: 4, address, prefixLen: 32, noPrefixRoute: true }));
  // IPv6: what DHCPv6 hands out on EC2, a /128 (the /64 is on-link through the router advertisement), without the
  // kernel's /128 prefix route, and without DAD (docs/ipv6.md). On every ENI, the primary included: IMDS does not
  // say which of the ENI's IPv6s DHCPv6 assigns, and one already on the link (any length) is not added again.
  const v6: DesiredAddress[] = eni.ipv6s.map((ip) => ({
    ifindex: link.index, family: 6, address: canonicalAddress(ip), prefixLen: 128, noPrefixRoute: true, noDad: true,
  }));
  return [...v4, ...prefixHosts, ...v6];
}

/** Largest IPv4 prefix whose addresses are put on the ENI one by one (EC2 delegates /28s: 16 addresses). */
export const MAX_PREFIX_HOSTS = 16;

/** Every address of an IPv4 prefix of at most MAX_PREFIX_HOSTS addresses, else none. */
export function prefixAddresses(prefix: string): string[] {
  const cidr = parseCidr(prefix);
  if (cidr === undefined || cidr.family !== 4 || cidr.prefixLen < 32 - Math.log2(MAX_PREFIX_HOSTS)) return [];
  const base = ipv4ToInt(networkOf(cidr).split('/')[0] ?? '0.0.0.0');
  return Array.from({ length: 2 ** (32 - cidr.prefixLen) }, (_, i) => intToIpv4(base + i));
}

function eniRoutes(eni: EniInfo, link: KernelLink, table: number, config: Config): KernelRoute[] {
  const subnet = parseCidr(eni.subnetIpv4Cidr);
  const primaryIp = eni.ipv4s[0];
  if (subnet === undefined || primaryIp === undefined) return [];
  return [
    {
      family: 4, table, dst: networkOf(subnet), ifindex: link.index, prefsrc: canonicalAddress(primaryIp),
      protocol: config.protocol, scope: RT_SCOPE_LINK, type: RTN_UNICAST,
    },
    {
      family: 4, table, dst: '0.0.0.0/0', gateway: subnetGateway(subnet), ifindex: link.index,
      protocol: config.protocol, scope: RT_SCOPE_UNIVERSE, type: RTN_UNICAST,
    },
  ];
}

/** True for fe80::/10. */
export function isLinkLocal6(address: string): boolean {
  // The colon first: most addresses are IPv4, and node's IPv6 expression is the costly part of the check.
  return address.includes(':') && isIPv6(address) && ipv6ToBigInt(address) >> 118n === 0x3fan;
}

/**
 * The IPv6 router of a link, as the kernel learned it from router advertisements: a default route via a
 * link-local gateway on that link, not ec2netd's (docs/ipv6.md). On EC2 the VPC router's link-local address is
 * derived from its MAC and is not in IMDS, so the RA is the only source; the main table's route is preferred (a
 * plain kernel puts it there), then any other table (systemd-networkd with `[IPv6AcceptRA] RouteTable=`).
 */
export function learnedIpv6Router(routes: readonly KernelRoute[], ifindex: number, protocol: number): string | undefined {
  const candidates = routes
    .filter((r) => r.family === 6 && r.dst === '::/0' && r.ifindex === ifindex && r.protocol !== protocol &&
      r.type === RTN_UNICAST && r.gateway !== undefined && isLinkLocal6(r.gateway))
    .sort((a, b) => Number(b.table === RT_TABLE_MAIN) - Number(a.table === RT_TABLE_MAIN) ||
      (a.metric ?? 1024) - (b.metric ?? 1024) || compareText(a.gateway ?? '', b.gateway ?? ''));
  return candidates[0]?.gateway;
}

/** IPv6 routes of an ENI table: each subnet IPv6 CIDR on-link, and the default route via the learned router. */
function eniRoutes6(eni: EniInfo, link: KernelLink, table: number, router: string | undefined, config: Config): KernelRoute[] {
  if (eni.ipv6s.length === 0 && eni.ipv6Prefixes.length === 0) return [];
  // No metric (the kernel's 1024) and no prefsrc: IPv6 routes have no scope, and a prefsrc would have to be a
  // configured, non-tentative address at the time of the add.
  const routes: KernelRoute[] = eni.subnetIpv6Cidrs.map((cidr) => ({
    family: 6, table, dst: normalizeCidr(cidr) ?? cidr, ifindex: link.index,
    protocol: config.protocol, scope: RT_SCOPE_UNIVERSE, type: RTN_UNICAST,
  }));
  if (router !== undefined) {
    routes.push({
      family: 6, table, dst: '::/0', gateway: router, ifindex: link.index,
      protocol: config.protocol, scope: RT_SCOPE_UNIVERSE, type: RTN_UNICAST,
    });
  }
  return routes;
}

function eniRules(eni: EniInfo, table: number, config: Config): KernelRule[] {
  const sources = [
    ...eni.ipv4s.map((ip) => `${canonicalAddress(ip)}/32`),
    ...eni.ipv4Prefixes.map((p) => normalizeCidr(p)).filter((p): p is string => p !== undefined),
  ];
  const sources6 = [
    ...eni.ipv6s.map((ip) => `${canonicalAddress(ip)}/128`),
    ...eni.ipv6Prefixes.map((p) => normalizeCidr(p)).filter((p): p is string => p !== undefined),
  ];
  const rule = (family: 4 | 6, src: string): KernelRule => ({
    family, priority: config.priorities.fromAddress, table, protocol: config.protocol, src, action: FR_ACT_TO_TBL,
  });
  return [...[...new Set(sources)].map((src) => rule(4, src)), ...[...new Set(sources6)].map((src) => rule(6, src))];
}

interface EniObjects {
  ifindex: number;
  table: number | undefined;
  first: string | undefined;
  config: Config;
  addresses: DesiredAddress[];
  rules: KernelRule[];
}

// An ENI's addresses and rules (most of a plan: 50 IPs are 100 objects) are built once per IMDS entry and link, and
// reused while both stay: IMDS entries keep their object across reads that change nothing of them (mergeRead), so
// a hot attach plans the new ENI's objects only, and the diff finds the others' keys ready (src/core/diff.ts).
const eniObjects = new WeakMap<EniInfo, EniObjects>();

/** `table` undefined: the primary ENI (secondary addresses only, no rules). */
function objectsOf(eni: EniInfo, link: KernelLink, table: number | undefined, config: Config, first: string | undefined): EniObjects {
  const kept = eniObjects.get(eni);
  if (kept !== undefined && kept.ifindex === link.index && kept.table === table && kept.first === first && kept.config === config) return kept;
  const objects: EniObjects = {
    ifindex: link.index, table, first, config,
    addresses: eniAddresses(eni, link, table === undefined, config, first),
    rules: table === undefined ? [] : eniRules(eni, table, config),
  };
  eniObjects.set(eni, objects);
  return objects;
}

const listed = new WeakMap<EniInfo, readonly string[]>();

/** An ENI's IPs and delegated prefixes, canonical and each once; kept per IMDS entry (mergeRead reuses unchanged ones). */
function listedAddresses(eni: EniInfo): readonly string[] {
  let out = listed.get(eni);
  if (out === undefined) {
    out = [...new Set([...eni.ipv4s, ...eni.ipv6s].map(canonicalAddress)
      .concat([...eni.ipv4Prefixes, ...eni.ipv6Prefixes].map((p) => normalizeCidr(p) ?? p)))];
    listed.set(eni, out);
  }
  return out;
}

/**
 * One owner per address. An address (or delegated prefix) IMDS lists on two ENIs is an IP being moved
 * (assign-private-ip-addresses --allow-reassignment), seen mid-way: it stays on the ENI whose link holds it now,
 * or, if neither (or both) does, goes nowhere, until IMDS agrees with itself. Never two `from` rules for one
 * source. Returns each ENI's share (only for ENIs that lost something) and one note per contested address.
 */
export function oneOwnerPerAddress(
  enis: readonly EniInfo[], links: readonly KernelLink[], addresses: readonly KernelAddress[],
): { claims: Map<string, EniInfo>; notes: string[] } {
  const linkOf = new Map(enis.map((e) => [e.mac, linkForMac(links, e.mac)]));
  // Each address's first lister, and the groups of the few that more than one lists: no array per address (~800 at
  // 15 × 50, on every plan).
  const first = new Map<string, EniInfo>();
  const contested = new Map<string, EniInfo[]>();
  for (const eni of enis) {
    if (linkOf.get(eni.mac) === undefined) continue;
    for (const a of listedAddresses(eni)) {
      const earlier = first.get(a);
      if (earlier === undefined) first.set(a, eni);
      else {
        const group = contested.get(a);
        if (group === undefined) contested.set(a, [earlier, eni]);
        else group.push(eni);
      }
    }
  }
  const lose = new Map<string, Set<string>>();
  const notes: string[] = [];
  // In the order the addresses were first listed, as before.
  const groups = contested.size === 0 ? [] : [...first.keys()].filter((a) => contested.has(a)).map((a) => [a, contested.get(a) as EniInfo[]] as const);
  for (const [address, group] of groups) {
    const holders = group.filter((e) => addresses.some((a) => a.ifindex === linkOf.get(e.mac)?.index && canonicalAddress(a.address) === address));
    const owner = holders.length === 1 ? holders[0] : undefined;
    for (const eni of group) if (eni !== owner) lose.set(eni.mac, (lose.get(eni.mac) ?? new Set()).add(address));
    const names = group.map((e) => `${e.interfaceId} (${linkOf.get(e.mac)?.name ?? e.mac})`).join(' and ');
    notes.push(owner === undefined
      ? `${address} is listed by IMDS on both ${names}: configured on neither until IMDS agrees with itself`
      : `${address} is listed by IMDS on both ${names}: kept on ${linkOf.get(owner.mac)?.name ?? owner.mac}, where it is configured, until IMDS agrees with itself`);
  }
  const claims = new Map<string, EniInfo>();
  for (const eni of enis) {
    const lost = lose.get(eni.mac);
    if (lost === undefined) continue;
    const keep = (a: string): boolean => !lost.has(canonicalAddress(a));
    const keepPrefix = (p: string): boolean => !lost.has(normalizeCidr(p) ?? p);
    claims.set(eni.mac, {
      ...eni, ipv4s: eni.ipv4s.filter(keep), ipv6s: eni.ipv6s.filter(keep),
      ipv4Prefixes: eni.ipv4Prefixes.filter(keepPrefix), ipv6Prefixes: eni.ipv6Prefixes.filter(keepPrefix),
    });
  }
  return { claims, notes };
}

/** Container bridges present in the kernel: links matching containers.bridgePatterns, with their networks (both families). */
export function containerBridges(kernel: Pick<KernelState, 'links' | 'addresses'>, config: Config): ContainerBridge[] {
  return kernel.links
    .filter((l) => matchesBridgePattern(l.name, config.containers.bridgePatterns))
    .map((l) => ({
      name: l.name, ifindex: l.index,
      subnets: kernel.addresses.filter((a) => a.ifindex === l.index).map((a) => `${a.address}/${a.prefixLen}`),
    }));
}

/**
 * `kernel.routes` is where the IPv6 routers are learned (see learnedIpv6Router); without it, no ENI table gets an
 * IPv6 default route.
 */
export function buildDesired(
  snapshot: ImdsSnapshot, kernel: Pick<KernelState, 'links' | 'addresses'> & Partial<Pick<KernelState, 'routes'>>, config: Config,
): DesiredState {
  const links = kernel.links;
  const state: DesiredState = {
    enis: [], skipped: [], linksUp: [], addresses: [], routes: [], rules: [], problems: [],
    mangle: { chain: config.iptables.chain, mask: config.containers.markMask >>> 0, rules: [] },
    mangle6: { chain: config.iptables.chain, mask: config.containers.markMask >>> 0, rules: [] },
  };
  const tables = new Map<number, string>();
  const sorted = [...snapshot.enis].sort((a, b) => a.networkCard - b.networkCard || a.deviceNumber - b.deviceNumber);
  const { claims, notes } = oneOwnerPerAddress(sorted, links, kernel.addresses);
  state.problems.push(...notes);
  for (const listed of sorted) {
    // `listed` is what IMDS says; `eni` is the share of it this ENI gets (an address two ENIs list goes to one).
    const eni = claims.get(listed.mac) ?? listed;
    const link = linkForMac(links, eni.mac);
    if (link === undefined) {
      state.skipped.push({ mac: eni.mac, reason: `no link with MAC ${eni.mac} (${eni.interfaceId}) on this host yet` });
      continue;
    }
    const primary = eni.mac === snapshot.primaryMac;
    if (primary) {
      state.enis.push({ eni: listed, link, primary });
      state.addresses.push(...objectsOf(eni, link, undefined, config, listed.ipv4s[0]).addresses);
      continue;
    }
    const table = tableFor(eni, config);
    const holder = tables.get(table);
    if (holder !== undefined) {
      // Never configure a guess: two ENIs claiming one table means IMDS is not consistent yet.
      state.skipped.push({ mac: eni.mac, reason: `table ${table} is already used by ${holder}` });
      continue;
    }
    tables.set(table, eni.interfaceId);
    const desired: DesiredEni = { eni: listed, link, primary, table };
    state.enis.push(desired);
    state.linksUp.push(link.index);
    const objects = objectsOf(eni, link, table, config, listed.ipv4s[0]);
    state.addresses.push(...objects.addresses);
    state.routes.push(...eniRoutes(listed, link, table, config));
    const router = learnedIpv6Router(kernel.routes ?? [], link.index, config.protocol);
    state.routes.push(...eniRoutes6(eni, link, table, router, config));
    if (router === undefined && (eni.ipv6s.length > 0 || eni.ipv6Prefixes.length > 0) && link.up) {
      state.problems.push(`${link.name} (${eni.interfaceId}): no IPv6 router learned on ${link.name} yet (no router-advertised ` +
        `default route via fe80::/10): table ${table} has no IPv6 default route`);
    }
    state.rules.push(...objects.rules);
  }
  addContainerObjects(state, kernel, config);
  return state;
}

function addContainerObjects(state: DesiredState, kernel: Pick<KernelState, 'links' | 'addresses'>, config: Config): void {
  const secondaries = state.enis.flatMap((d) => (d.table === undefined ? [] : [{
    mac: d.eni.mac, deviceNumber: d.eni.deviceNumber, networkCard: d.eni.networkCard, linkName: d.link.name, table: d.table,
  }]));
  const bridges = containerBridges(kernel, config);
  try {
    const objects = buildContainerObjects(secondaries, bridges, config);
    state.routes.push(...objects.routes);
    state.rules.push(...objects.rules);
    state.mangle = objects.mangle;
    state.mangle6 = objects.mangle6;
  } catch (err) {
    // Source routing still works without marks: plan it, and report why containers are not covered.
    if (!(err instanceof MarkSpaceError)) throw err;
    // With no container network there is nothing to mark: an ENI on network card 1 (slot 100+) not fitting the
    // default mask is then no problem (it would otherwise be reported, and hold back READY, on every multi-card host).
    if (bridgeSubnets(bridges, 4).length + bridgeSubnets(bridges, 6).length > 0) state.problems.push(err.message);
  }
}
