// Container bridges (Docker): connection marks so that replies from a container leave through the ENI the
// connection came in on. Pure: the mark layout, and the routes, rules and mangle-chain contents ec2netd wants.
// The packet path and the reasons for every object are in docs/containers.md.
import { ConfigError } from '../config';
import type { Config } from '../config';
import { compareText } from './compare';
import { ipv6ToBigInt, normalizeCidr, parseCidr } from './ip';
import type { Family, KernelRoute, KernelRule } from './types';

const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RTN_UNICAST = 1;
const FR_ACT_TO_TBL = 1;

/** A secondary ENI whose link exists (the primary ENI is never marked: its replies use main anyway). */
export interface ContainerEni {
  mac: string;
  deviceNumber: number;
  networkCard: number;
  /** Kernel name of the ENI's link (it goes into iptables `-i`). */
  linkName: string;
  /** The ENI's routing table: tableBase + tablePerCard * networkCard + deviceNumber. */
  table: number;
}

/** A container bridge found in the kernel: a link whose name matches containers.bridgePatterns. */
export interface ContainerBridge {
  name: string;
  ifindex: number;
  /** Networks of the bridge's addresses, both families (CIDR; host bits may be set; IPv6 link-local is ignored). */
  subnets: string[];
}

/** One ENI's place in the mark space. */
export interface EniMark {
  mac: string;
  linkName: string;
  table: number;
  /** Slot number before spreading into the mask: the table offset, tablePerCard * card + device. */
  slot: number;
  /** The mark value: `slot` spread into the bits of the mask. Never 0 (0 means "no ENI"). */
  value: number;
}

/** What ec2netd's mangle chain holds, in order: per ENI set + restore, then restore per bridge. */
export type MangleRule =
  | { kind: 'set-mark'; inIface: string; value: number; mask: number }
  | { kind: 'restore-mark'; inIface: string; mask: number };

export interface MangleSpec {
  /** ec2netd's own chain in the mangle table, jumped to from the top of PREROUTING. */
  chain: string;
  mask: number;
  rules: MangleRule[];
}

export interface ContainerObjects {
  routes: KernelRoute[];
  rules: KernelRule[];
  mangle: MangleSpec;
  /** The same chain for ip6tables: only when a bridge has an IPv6 network (else no rules: no chain wanted). */
  mangle6: MangleSpec;
  marks: EniMark[];
  /** Container networks present in the kernel, normalised and deduplicated (IPv4). */
  subnets: string[];
  /** The same for IPv6 (link-local left out). */
  subnets6: string[];
  /** ENIs that get no mark, with the reason (for logs and `ec2netd status`). */
  unmarked: { mac: string; reason: string }[];
}

/** The mask has too few bits for the ENIs present (or two ENIs share a slot). Names containers.markMask. */
export class MarkSpaceError extends ConfigError {
  override name = 'MarkSpaceError';
}

/** Positions of the set bits of a 32-bit mask, lowest first. */
export function maskBits(mask: number): number[] {
  const bits: number[] = [];
  for (let bit = 0; bit < 32; bit++) if (Math.floor(mask / 2 ** bit) % 2 === 1) bits.push(bit);
  return bits;
}

/** Largest slot the mask can hold (slot 0 is "no ENI"). */
export function maxSlot(mask: number): number {
  return 2 ** maskBits(mask).length - 1;
}

/**
 * Spreads `slot` into the bits of `mask`, lowest slot bit into the lowest mask bit (pdep).
 * Example: mask 0x1f00, slot 3 → 0x300; mask 0x0f0f, slot 0x12 → 0x102.
 */
export function spreadSlot(slot: number, mask: number): number {
  const bits = maskBits(mask);
  if (!Number.isInteger(slot) || slot < 0 || slot > 2 ** bits.length - 1) {
    throw new RangeError(`slot ${slot} does not fit in mask ${hex(mask)} (${bits.length} bits)`);
  }
  let value = 0;
  bits.forEach((bit, i) => {
    if (Math.floor(slot / 2 ** i) % 2 === 1) value += 2 ** bit;
  });
  return value;
}

/** Inverse of spreadSlot (pext): the slot a mark value encodes; bits outside the mask are ignored. */
export function slotOfMark(value: number, mask: number): number {
  let slot = 0;
  maskBits(mask).forEach((bit, i) => {
    if (Math.floor(value / 2 ** bit) % 2 === 1) slot += 2 ** i;
  });
  return slot;
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/**
 * The slot of an ENI: its table offset (tablePerCard * networkCard + deviceNumber). It depends on
 * nothing but the ENI's own attachment, so it is stable while the ENI is attached (another ENI's
 * detach or attach never moves it), it survives daemon restarts without stored state, and the primary
 * ENI (card 0, device 0) gets slot 0 = "no ENI" for free. An operator can read the table off a mark.
 */
export function slotFor(eni: Pick<ContainerEni, 'networkCard' | 'deviceNumber'>, config: Pick<Config, 'tablePerCard'>): number {
  return config.tablePerCard * eni.networkCard + eni.deviceNumber;
}

/**
 * Mark values for the ENIs. Throws MarkSpaceError when a slot does not fit in containers.markMask or two
 * ENIs share a slot; an ENI whose slot is 0 (device-number 0 on card 0 but not the primary: IMDS not
 * consistent yet) gets no mark and is returned in `unmarked`.
 */
export function assignMarks(
  enis: ContainerEni[],
  config: Pick<Config, 'tablePerCard'> & { containers: Pick<Config['containers'], 'markMask'> },
): { marks: EniMark[]; unmarked: { mac: string; reason: string }[] } {
  const mask = config.containers.markMask >>> 0;
  const bits = maskBits(mask).length;
  const limit = 2 ** bits - 1;
  const marks: EniMark[] = [];
  const unmarked: { mac: string; reason: string }[] = [];
  const bySlot = new Map<number, string>();
  const sorted = [...enis].sort((a, b) => a.table - b.table || compareText(a.mac, b.mac));
  for (const eni of sorted) {
    const slot = slotFor(eni, config);
    if (slot === 0) {
      unmarked.push({ mac: eni.mac, reason: 'device-number 0 on network card 0 is the primary ENI\'s place: no mark' });
      continue;
    }
    if (slot > limit) {
      const need = Math.floor(Math.log2(slot)) + 1;
      throw new MarkSpaceError(
        `setting "containers.markMask" ${hex(mask)} has ${bits} bit(s) (slots 1-${limit}), but ENI ${eni.mac} ` +
          `(${eni.linkName}, network card ${eni.networkCard}, device ${eni.deviceNumber}) needs slot ${slot} ` +
          `(${need} bits): widen the mask with bits no other tool uses`,
      );
    }
    const holder = bySlot.get(slot);
    if (holder !== undefined) {
      throw new MarkSpaceError(
        `setting "containers.markMask": ENIs ${holder} and ${eni.mac} both map to slot ${slot} (table offset); ` +
          'check tablePerCard against the device numbers',
      );
    }
    bySlot.set(slot, eni.mac);
    marks.push({ mac: eni.mac, linkName: eni.linkName, table: eni.table, slot, value: spreadSlot(slot, mask) });
  }
  return { marks, unmarked };
}

/** Shell-style match with `*` = any run of characters (the only wildcard containers.bridgePatterns has). */
export function matchesBridgePattern(name: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => patternRegExp(pattern).test(name));
}

/** Compiled once per pattern: every sync tests every link, and a storm brings hundreds of links. */
const compiled = new Map<string, RegExp>();
function patternRegExp(pattern: string): RegExp {
  let re = compiled.get(pattern);
  if (re === undefined) {
    re = new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    compiled.set(pattern, re);
  }
  return re;
}

/** Interface names that may reach iptables argv / restore text (the kernel allows more; we do not). */
export const IFNAME_RE = /^[A-Za-z0-9_.@-]{1,15}$/;

export function isSafeIfname(name: string): boolean {
  return IFNAME_RE.test(name);
}

/** Normalised networks of the bridges of one family, deduplicated, sorted. IPv6 link-local (fe80::/10) is every
 * bridge's and routes nothing to a container: left out. */
export function bridgeSubnets(bridges: ContainerBridge[], family: Family = 4): string[] {
  const out = new Set<string>();
  for (const bridge of bridges) {
    for (const subnet of bridge.subnets) {
      const cidr = parseCidr(subnet);
      if (cidr === undefined || cidr.family !== family) continue;
      if (family === 6 && ipv6ToBigInt(cidr.address) >> 118n === 0x3fan) continue;
      const network = normalizeCidr(subnet);
      if (network !== undefined) out.add(network);
    }
  }
  return [...out].sort();
}

/**
 * Everything ec2netd wants for containers, given the secondary ENIs and the container bridges present, for each
 * family that has a container network (IPv4 and IPv6 alike, with the same marks; docs/containers.md):
 * - in every ENI table, `<bridge subnet> dev <bridge>`: marked packets towards a container
 *   (a DNATed SYN under src_valid_mark) must not be routed back out of the ENI;
 * - `to <bridge subnet> lookup main` at priorities.toContainers, ahead of the `from` rules;
 * - per ENI `fwmark V/M lookup T` at priorities.fwmark;
 * - the mangle chain (iptables, ip6tables): per ENI, mark NEW connections entering it and restore the mark on
 *   every packet entering it (strict rp_filter checks the DNATed packet with its mark); restore on packets from
 *   each bridge of that family (the container's reply).
 * Bridges or ENIs whose names are not safe for iptables are left out of the chain (and reported).
 * With containers disabled, no marked ENI or no bridge, nothing is wanted (a chain spec with no rules); a host
 * without an IPv6 container network wants nothing of IPv6.
 */
export function buildContainerObjects(
  enis: ContainerEni[],
  bridges: ContainerBridge[],
  config: Config,
): ContainerObjects {
  const mask = config.containers.markMask >>> 0;
  const none = (): MangleSpec => ({ chain: config.iptables.chain, mask, rules: [] });
  const empty: ContainerObjects = { routes: [], rules: [], marks: [], subnets: [], subnets6: [], unmarked: [], mangle: none(), mangle6: none() };
  if (!config.containers.enabled) return empty;
  const usable = bridges
    .filter((b) => matchesBridgePattern(b.name, config.containers.bridgePatterns) && isSafeIfname(b.name))
    .sort((a, b) => compareText(a.name, b.name));
  const unsafeEnis = enis.filter((e) => !isSafeIfname(e.linkName));
  const { marks, unmarked } = assignMarks(enis.filter((e) => isSafeIfname(e.linkName)), config);
  unmarked.push(...unsafeEnis.map((e) => ({ mac: e.mac, reason: `link name ${JSON.stringify(e.linkName)} is not safe for iptables` })));
  const subnets = bridgeSubnets(usable, 4);
  const subnets6 = bridgeSubnets(usable, 6);
  // Nothing to steer without both a marked ENI and a container network: then ec2netd wants no objects at
  // all (an empty chain spec means "no chain, no jump").
  if (marks.length === 0) return { ...empty, marks, unmarked };
  const v4 = familyObjects(4, marks, usable, config);
  const v6 = familyObjects(6, marks, usable, config);
  return {
    routes: [...v4.routes, ...v6.routes], rules: [...v4.rules, ...v6.rules], marks, subnets, subnets6, unmarked,
    mangle: { chain: config.iptables.chain, mask, rules: v4.mangle }, mangle6: { chain: config.iptables.chain, mask, rules: v6.mangle },
  };
}

/** One family's routes, rules and chain rules; nothing when no bridge has a network of that family. */
function familyObjects(
  family: Family, marks: EniMark[], bridges: ContainerBridge[], config: Config,
): { routes: KernelRoute[]; rules: KernelRule[]; mangle: MangleRule[] } {
  const mask = config.containers.markMask >>> 0;
  const subnets = bridgeSubnets(bridges, family);
  if (subnets.length === 0) return { routes: [], rules: [], mangle: [] };
  // IPv6 routes have no scope (the kernel reports universe whatever was asked).
  const scope = family === 4 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  const routes: KernelRoute[] = [];
  for (const mark of marks) {
    for (const bridge of bridges) {
      for (const dst of bridgeSubnets([bridge], family)) {
        routes.push({ family, table: mark.table, dst, ifindex: bridge.ifindex, protocol: config.protocol, scope, type: RTN_UNICAST });
      }
    }
  }
  const rules: KernelRule[] = subnets.map((dst) => ({
    family, priority: config.priorities.toContainers, table: 254, protocol: config.protocol, dst, action: FR_ACT_TO_TBL,
  }));
  for (const mark of marks) {
    rules.push({
      family, priority: config.priorities.fwmark, table: mark.table, protocol: config.protocol,
      fwmark: mark.value, fwmask: mask, action: FR_ACT_TO_TBL,
    });
  }
  const mangle: MangleRule[] = [];
  for (const mark of marks) {
    mangle.push({ kind: 'set-mark', inIface: mark.linkName, value: mark.value, mask });
    mangle.push({ kind: 'restore-mark', inIface: mark.linkName, mask });
  }
  for (const bridge of bridges) {
    if (bridgeSubnets([bridge], family).length > 0) mangle.push({ kind: 'restore-mark', inIface: bridge.name, mask });
  }
  return { routes, rules, mangle };
}
