// Desired state: what the kernel should hold, given what IMDS says and which links exist. Pure.
import type { Config } from '../config';
import { buildContainerObjects, matchesBridgePattern, MarkSpaceError, type ContainerBridge } from './containers';
import { canonicalAddress, networkOf, normalizeCidr, parseCidr, subnetGateway } from './ip';
import type {
  DesiredAddress, DesiredEni, DesiredState, EniInfo, ImdsSnapshot, KernelLink, KernelRoute, KernelRule, KernelState, PendingEni,
} from './types';

export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RTN_UNICAST = 1;
export const FR_ACT_TO_TBL = 1;

/** Link kinds that share an ENI's MAC without being the ENI itself (VLANs, bridges, bonds, macvlans). */
const STACKED_KINDS = new Set(['vlan', 'macvlan', 'macvtap', 'ipvlan', 'ipvtap', 'bridge', 'bond', 'team']);

/** Table number convention of amazon-ec2-net-utils and the VPC CNI. */
export function tableFor(eni: Pick<EniInfo, 'networkCard' | 'deviceNumber'>, config: Config): number {
  return config.tableBase + config.tablePerCard * eni.networkCard + eni.deviceNumber;
}

/** The link carrying an ENI: matched by MAC, never by name. */
export function linkForMac(links: KernelLink[], mac: string): KernelLink | undefined {
  return links.find((l) => l.mac === mac && (l.kind === undefined || !STACKED_KINDS.has(l.kind)));
}

function subnetPrefix(eni: EniInfo): number {
  return parseCidr(eni.subnetIpv4Cidr)?.prefixLen ?? 32;
}

function eniAddresses(eni: EniInfo, link: KernelLink, primary: boolean, config: Config): DesiredAddress[] {
  const prefix = subnetPrefix(eni);
  // The primary ENI's own address belongs to DHCP; ec2netd only adds its secondaries.
  const ips = primary ? eni.ipv4s.slice(1) : eni.ipv4s;
  return ips.map((ip) => {
    const isFirst = !primary && ip === eni.ipv4s[0];
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

function eniRules(eni: EniInfo, table: number, config: Config): KernelRule[] {
  const sources = [
    ...eni.ipv4s.map((ip) => `${canonicalAddress(ip)}/32`),
    ...eni.ipv4Prefixes.map((p) => normalizeCidr(p)).filter((p): p is string => p !== undefined),
  ];
  return [...new Set(sources)].map((src) => ({
    family: 4, priority: config.priorities.fromAddress, table, protocol: config.protocol, src, action: FR_ACT_TO_TBL,
  }));
}

/**
 * An ENI that a fresh IMDS answer no longer lists keeps its configuration while its link is still there:
 * on EC2 a detach removes the link, so a missing entry with a present link is IMDS lagging, not a detach.
 */
export function retainAttached(previous: ImdsSnapshot | undefined, next: ImdsSnapshot, links: KernelLink[]): ImdsSnapshot {
  if (previous === undefined) return next;
  const listed = new Set([...next.enis.map((e) => e.mac), ...next.pending.map((p) => p.mac)]);
  const kept = previous.enis.filter((e) => !listed.has(e.mac) && linkForMac(links, e.mac) !== undefined);
  return kept.length === 0 ? next : { ...next, enis: [...next.enis, ...kept] };
}

/** Container bridges present in the kernel: links matching containers.bridgePatterns, with their IPv4 networks. */
export function containerBridges(kernel: Pick<KernelState, 'links' | 'addresses'>, config: Config): ContainerBridge[] {
  return kernel.links
    .filter((l) => matchesBridgePattern(l.name, config.containers.bridgePatterns))
    .map((l) => ({
      name: l.name, ifindex: l.index,
      subnets: kernel.addresses.filter((a) => a.ifindex === l.index && a.family === 4).map((a) => `${a.address}/${a.prefixLen}`),
    }));
}

export function buildDesired(snapshot: ImdsSnapshot, kernel: Pick<KernelState, 'links' | 'addresses'>, config: Config): DesiredState {
  const links = kernel.links;
  const state: DesiredState = {
    enis: [], skipped: [], linksUp: [], addresses: [], routes: [], rules: [], problems: [],
    mangle: { chain: config.iptables.chain, mask: config.containers.markMask >>> 0, rules: [] },
  };
  const tables = new Map<number, string>();
  const sorted = [...snapshot.enis].sort((a, b) => a.networkCard - b.networkCard || a.deviceNumber - b.deviceNumber);
  for (const eni of sorted) {
    const link = linkForMac(links, eni.mac);
    if (link === undefined) {
      state.skipped.push({ mac: eni.mac, reason: `no link with MAC ${eni.mac} (${eni.interfaceId}) on this host yet` });
      continue;
    }
    const primary = eni.mac === snapshot.primaryMac;
    if (primary) {
      state.enis.push({ eni, link, primary });
      state.addresses.push(...eniAddresses(eni, link, true, config));
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
    const desired: DesiredEni = { eni, link, primary, table };
    state.enis.push(desired);
    state.linksUp.push(link.index);
    state.addresses.push(...eniAddresses(eni, link, false, config));
    state.routes.push(...eniRoutes(eni, link, table, config));
    state.rules.push(...eniRules(eni, table, config));
  }
  addContainerObjects(state, kernel, config);
  return state;
}

function addContainerObjects(state: DesiredState, kernel: Pick<KernelState, 'links' | 'addresses'>, config: Config): void {
  const secondaries = state.enis.flatMap((d) => (d.table === undefined ? [] : [{
    mac: d.eni.mac, deviceNumber: d.eni.deviceNumber, networkCard: d.eni.networkCard, linkName: d.link.name, table: d.table,
  }]));
  try {
    const objects = buildContainerObjects(secondaries, containerBridges(kernel, config), config);
    state.routes.push(...objects.routes);
    state.rules.push(...objects.rules);
    state.mangle = objects.mangle;
  } catch (err) {
    // Source routing still works without marks: plan it, and report why containers are not covered.
    if (!(err instanceof MarkSpaceError)) throw err;
    state.problems.push(err.message);
  }
}

/** Skipped and pending ENIs together, for logs and status. */
export function waitingEnis(snapshot: ImdsSnapshot, desired: DesiredState): PendingEni[] {
  return [...snapshot.pending, ...desired.skipped];
}
