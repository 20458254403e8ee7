// The data that flows through ec2netd: IMDS facts in, kernel objects out.
// Everything here is plain data (no I/O), so the planner and the diff can be tested without a kernel.
import type { MangleSpec } from './containers';

export type Family = 4 | 6;

/** One ENI as IMDS describes it, already validated (see src/imds/snapshot.ts). */
export interface EniInfo {
  /** Lower-case, colon-separated MAC: the only stable key of an ENI (names change, see udev renames). */
  mac: string;
  deviceNumber: number;
  networkCard: number;
  interfaceId: string;
  /** Private IPv4 addresses; the first is the ENI's primary address. */
  ipv4s: string[];
  /** Delegated IPv4 prefixes, CIDR notation. */
  ipv4Prefixes: string[];
  ipv6s: string[];
  ipv6Prefixes: string[];
  /** The ENI's subnet, CIDR notation (e.g. 10.0.1.0/24). */
  subnetIpv4Cidr: string;
  subnetIpv6Cidrs: string[];
}

/** A MAC that IMDS lists but whose data is not complete yet (eventual consistency after attach). */
export interface PendingEni {
  mac: string;
  reason: string;
}

/**
 * An ENI (or one part of it: its IPv4 or IPv6 keys) configured from its last consistent IMDS read, because the
 * latest read of it was incomplete, inconsistent or malformed (src/core/last-good.ts). `waiting`: there is no last
 * good state for that part yet, so it is simply not configured until IMDS is consistent.
 */
export interface HeldEni {
  mac: string;
  interfaceId: string;
  part: 'all' | 'ipv4' | 'ipv6';
  reason: string;
  waiting?: boolean;
  /** IMDS does not list the ENI at all (kept because its link is here): a targeted re-read cannot help. */
  unlisted?: boolean;
}

/** What ec2netd takes IMDS to say: the latest consistent read of each ENI (and of each part of it). */
export interface ImdsSnapshot {
  primaryMac: string;
  enis: EniInfo[];
  /** Listed, never read consistently yet: not configured. */
  pending: PendingEni[];
  /** Configured from their last good read (see HeldEni); absent: none. */
  held?: HeldEni[];
}

/** Observed kernel objects. Addresses are plain strings (10.0.1.5, fd00::1). */
export interface KernelLink {
  index: number;
  name: string;
  mac: string;
  up: boolean;
  /** rtnetlink kind (veth, bridge, ...) when the kernel reports one. */
  kind?: string;
  /** ifindex of the bridge/bond this link is enslaved to (IFLA_MASTER): a container's veth, never an ENI. */
  master?: number;
}

export interface KernelAddress {
  ifindex: number;
  family: Family;
  address: string;
  prefixLen: number;
  /** IFA_F_NOPREFIXROUTE: no connected route in main for this address. */
  noPrefixRoute?: boolean;
}

export interface KernelRoute {
  family: Family;
  table: number;
  /** Destination prefix in CIDR form; `default` is 0.0.0.0/0 or ::/0. */
  dst: string;
  gateway?: string;
  ifindex?: number;
  prefsrc?: string;
  protocol: number;
  /** rtnetlink scope: 0 universe, 253 link, 254 host. */
  scope: number;
  metric?: number;
  /** rtnetlink route type: 1 unicast, 2 local, 3 broadcast, ... */
  type: number;
}

export interface KernelRule {
  family: Family;
  priority: number;
  table: number;
  protocol: number;
  /** Source selector in CIDR form, absent for `from all`. */
  src?: string;
  /** Destination selector in CIDR form, absent for `to all`. */
  dst?: string;
  fwmark?: number;
  fwmask?: number;
  /** FIB rule action: 1 = to_tbl (lookup). Other actions are never ours. */
  action: number;
}

/**
 * A snapshot of the kernel's state, as read through rtnetlink. Never changed once made (a new read makes new
 * arrays): the planner keeps what it derives from each array for as long as the array lives (src/core/diff.ts).
 */
export interface KernelState {
  links: readonly KernelLink[];
  addresses: readonly KernelAddress[];
  routes: readonly KernelRoute[];
  rules: readonly KernelRule[];
}

/** What ec2netd wants for one ENI whose link exists on this host. */
export interface DesiredEni {
  eni: EniInfo;
  link: KernelLink;
  primary: boolean;
  /** Routing table of this ENI; undefined for the primary ENI (it uses main). */
  table?: number;
}

/** A desired address: on `ifindex`, with the given prefix. Matched against the kernel by (ifindex, address). */
export interface DesiredAddress {
  ifindex: number;
  family: Family;
  address: string;
  prefixLen: number;
  noPrefixRoute: boolean;
  /** IFA_F_NODAD: usable at once, no duplicate address detection (IPv6 only; docs/ipv6.md). */
  noDad?: boolean;
}

/** Everything ec2netd wants the kernel to hold. Routes and rules all carry the owner protocol. */
export interface DesiredState {
  /** Container marks: ec2netd's mangle chain (no rules = no chain wanted). */
  mangle: MangleSpec;
  /** The same chain in ip6tables (no rules without an IPv6 container network). */
  mangle6: MangleSpec;
  /** Things that could not be planned (e.g. the mark space is too small), for logs and status. */
  problems: string[];
  enis: DesiredEni[];
  /** ENIs known to IMDS that cannot be configured now, with the reason (no link yet, table clash, ...). */
  skipped: PendingEni[];
  linksUp: number[];
  addresses: DesiredAddress[];
  routes: KernelRoute[];
  rules: KernelRule[];
}

/** One kernel write. `reason` is for logs and `ec2netd plan`. */
export type Change =
  | { op: 'link-up'; link: KernelLink; reason: string }
  | { op: 'add-address'; address: DesiredAddress; linkName: string; reason: string }
  | { op: 'del-address'; address: KernelAddress; linkName: string; reason: string }
  | { op: 'add-route'; route: KernelRoute; linkName?: string; reason: string }
  /** Atomic in-place change (NLM_F_REPLACE) of an owned route whose slot (table, dst, metric) stays. */
  | { op: 'replace-route'; route: KernelRoute; previous: KernelRoute; linkName?: string; reason: string }
  | { op: 'del-route'; route: KernelRoute; linkName?: string; reason: string }
  | { op: 'add-rule'; rule: KernelRule; reason: string }
  | { op: 'del-rule'; rule: KernelRule; reason: string };

/** An ordered list of changes: applying them in order is make-before-break. */
export type Plan = Change[];
