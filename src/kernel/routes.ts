// Routes: dump every table of IPv4 and IPv6, add (CREATE|EXCL), replace (CREATE|REPLACE), delete.
//
// Tables above 255 travel in the RTA_TABLE attribute; the 8-bit rtm_table field then says 252 (RT_TABLE_COMPAT).
// So the table is read from attrs.table and always written to both.
//
// onlink: `default via GW dev ethN table T` needs no `onlink` when the subnet route `SUBNET dev ethN` is already
// in table T. Since Linux 4.17 the kernel validates a gateway by a lookup in the route's own table first, and
// only then falls back to the full policy lookup (fib_check_nh_v4_gw; ip6_validate_gw does the same through
// ip6_nh_lookup_table). Tested in test/integration/kernel-routes.test.ts: with the subnet route in T the add
// succeeds; without it and without a connected route in main (noprefixroute address) it is ENETUNREACH.
// ec2netd does not set onlink: the planner adds the subnet route before the default route, and a gateway that
// is not on-link must fail loudly rather than produce a route that black-holes traffic.
import type { Family, KernelRoute } from '../core/types';
import {
  AF_INET,
  AF_INET6,
  KernelError,
  NLM_F_CREATE_EXCL,
  NLM_F_CREATE_REPLACE,
  RT_TABLE_COMPAT,
  afOf,
  familyOfAf,
  ipFromBuffer,
  ipToBuffer,
  prefixText,
  prefixToBuffer,
  type Netlink,
  type NetlinkRequest,
  sendOne,
} from './netlink';
import { forEachAttribute, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, dumpRequest, encodeMessage, type Attr } from './rtnl-codec';

export const RT_TABLE_LOCAL = 255;
const RTN_UNICAST = 1;

const RTMSG_LEN = 12;
const RTM_F_CLONED = 0x200;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_TABLE = 15;

/**
 * Reads a route from an RTM_NEWROUTE message: rtmsg and the six attributes KernelRoute holds, as the generic parser
 * would read it. Written by hand because a dump holds every route of
 * every table (the local table alone has two per IPv4 address) and the generic parser makes an object per
 * attribute: `skipLocal` drops table 255 before reading any attribute but RTA_TABLE.
 */
export function parseRouteMessage(type: number, data: Buffer, skipLocal = false): KernelRoute | undefined {
  if (type !== RTM_NEWROUTE || data.length < RTMSG_LEN) return undefined;
  const family = familyOfAf(data[0]);
  const dstLen = data[1] ?? 0;
  // Cached clones (IPv6 exceptions) and source-specific IPv6 routes are never ec2netd's, and KernelRoute cannot
  // express them: listing them would make them look like plain routes to the same destination.
  if (family === undefined || (data[2] ?? 0) > 0 || (data.readUInt32LE(8) & RTM_F_CLONED) !== 0) return undefined;
  let table = data[4] ?? 0;
  let dst: Buffer | undefined;
  let gateway: Buffer | undefined;
  let prefsrc: Buffer | undefined;
  let oif: number | undefined;
  let metric: number | undefined;
  forEachAttribute(data, RTMSG_LEN, data.length, (type, value, end) => {
    switch (type) {
      case RTA_DST: dst = data.subarray(value, end); break;
      case RTA_GATEWAY: gateway = data.subarray(value, end); break;
      case RTA_PREFSRC: prefsrc = data.subarray(value, end); break;
      case RTA_OIF: if (end - value >= 4) oif = data.readUInt32LE(value); break;
      case RTA_PRIORITY: if (end - value >= 4) metric = data.readUInt32LE(value); break;
      case RTA_TABLE: if (end - value >= 4) table = data.readUInt32LE(value); break;
    }
  });
  if (skipLocal && table === RT_TABLE_LOCAL) return undefined;
  const route: KernelRoute = {
    family, table, dst: prefixText(family, dst, dstLen), protocol: data[5] ?? 0, scope: data[6] ?? 0, type: data[7] ?? 0,
  };
  if (gateway !== undefined) route.gateway = ipFromBuffer(gateway);
  if (oif !== undefined) route.ifindex = oif;
  if (prefsrc !== undefined) route.prefsrc = ipFromBuffer(prefsrc);
  if (metric !== undefined) route.metric = metric;
  return route;
}

/**
 * Every table of IPv4 and IPv6. `skipLocal` drops table 255 (local/broadcast routes the kernel derives from
 * addresses): ec2netd never touches it, and it is the largest table on a host with many addresses.
 */
export async function dumpRoutes(nl: Netlink, options: { skipLocal?: boolean; family?: Family } = {}): Promise<KernelRoute[]> {
  const families = options.family === undefined ? [AF_INET, AF_INET6] : [afOf(options.family)];
  const skipLocal = options.skipLocal === true;
  const routes: KernelRoute[] = [];
  for (const af of families) {
    routes.push(...await nl.dumpWith(`dump ${af === AF_INET ? 'IPv4' : 'IPv6'} routes`, RTM_GETROUTE, [dumpRequest('route', af)], (type, data) => parseRouteMessage(type, data, skipLocal)));
  }
  return routes;
}

const TYPE_NAMES: Record<number, string> = { 2: 'local', 3: 'broadcast', 4: 'anycast', 5: 'multicast', 6: 'blackhole', 7: 'unreachable', 8: 'prohibit', 9: 'throw' };

/** `ip route` syntax: `default via 10.0.1.1 dev eth1 table 10001 proto 236`. */
export function describeRoute(r: KernelRoute, linkName?: string): string {
  const parts: string[] = [];
  const type = TYPE_NAMES[r.type];
  if (type !== undefined) parts.push(type);
  parts.push(r.dst === '0.0.0.0/0' || r.dst === '::/0' ? (r.family === 6 ? '-6 default' : 'default') : r.dst);
  if (r.gateway !== undefined) parts.push(`via ${r.gateway}`);
  if (linkName !== undefined) parts.push(`dev ${linkName}`);
  else if (r.ifindex !== undefined) parts.push(`dev #${r.ifindex}`);
  if (r.prefsrc !== undefined) parts.push(`src ${r.prefsrc}`);
  parts.push(`table ${r.table}`, `proto ${r.protocol}`);
  if (r.scope !== 0) parts.push(`scope ${r.scope}`);
  if (r.metric !== undefined) parts.push(`metric ${r.metric}`);
  return parts.join(' ');
}

/** The metric the kernel reports for a route added without one: IPv4 0 (no attribute), IPv6 1024. */
export function effectiveMetric(r: Pick<KernelRoute, 'family' | 'metric'>): number {
  return r.metric ?? (r.family === 6 ? 1024 : 0);
}

/** Same forwarding behaviour: every field but the protocol (the owner mark). */
export function sameRoute(a: KernelRoute, b: KernelRoute): boolean {
  return a.family === b.family && a.table === b.table && a.dst === b.dst && a.gateway === b.gateway &&
    a.ifindex === b.ifindex && a.prefsrc === b.prefsrc && a.type === b.type && a.scope === b.scope &&
    effectiveMetric(a) === effectiveMetric(b);
}

/**
 * `ip route add`: CREATE|EXCL. The kernel says EEXIST when any route holds the slot (table, dst, tos, metric),
 * whatever its gateway; so EEXIST is re-checked: it stays EEXIST only when an equal route (any protocol) is
 * there, else it becomes ECONFLICT naming the route in the way.
 */
export async function addRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  try {
    await sendOne(nl, `add route ${describeRoute(r, linkName)}`, routeRequest(r, 'add'));
  } catch (err) {
    if (!(err instanceof KernelError) || err.code !== 'EEXIST') throw err;
    throw routeExistsError(await dumpRoutes(nl, { family: r.family }), r, linkName, err);
  }
}

/** What an EEXIST on adding `r` means, given the routes present: EEXIST (an equal route is there) or ECONFLICT. */
export function routeExistsError(present: readonly KernelRoute[], r: KernelRoute, linkName?: string, eexist?: KernelError): KernelError {
  const what = `add route ${describeRoute(r, linkName)}`;
  if (present.some((p) => sameRoute(p, r))) return eexist ?? new KernelError('EEXIST', what);
  const holder = present.find((p) => p.table === r.table && p.dst === r.dst && effectiveMetric(p) === effectiveMetric(r));
  return new KernelError('ECONFLICT', what, `EEXIST: slot held by ${holder === undefined ? 'another route' : describeRoute(holder)}`);
}

/** The netlink message of `ip route add` (CREATE|EXCL), `replace` (CREATE|REPLACE) or `del` of `r`, for Netlink.sendAll. */
export function routeRequest(r: KernelRoute, op: 'add' | 'replace' | 'del'): NetlinkRequest {
  // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32); then the attributes in the
  // order the package's formatter was given them (RTA_TABLE first), so the bytes are the same as before.
  const { addr, len } = prefixToBuffer(r.dst);
  const header = Buffer.alloc(RTMSG_LEN);
  header[0] = afOf(r.family);
  header[1] = len;
  header[4] = r.table > 255 ? RT_TABLE_COMPAT : r.table;
  header[5] = r.protocol;
  header[6] = r.scope;
  header[7] = r.type === 0 ? RTN_UNICAST : r.type;
  const attrs: Attr[] = [{ type: RTA_TABLE, value: r.table }];
  if (len > 0) attrs.push({ type: RTA_DST, value: addr });
  if (r.gateway !== undefined) attrs.push({ type: RTA_GATEWAY, value: ipToBuffer(r.gateway) });
  if (r.ifindex !== undefined) attrs.push({ type: RTA_OIF, value: r.ifindex });
  if (r.prefsrc !== undefined) attrs.push({ type: RTA_PREFSRC, value: ipToBuffer(r.prefsrc) });
  if (r.metric !== undefined) attrs.push({ type: RTA_PRIORITY, value: r.metric });
  return {
    type: op === 'del' ? RTM_DELROUTE : RTM_NEWROUTE,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : op === 'replace' ? NLM_F_CREATE_REPLACE : 0,
    body: [encodeMessage(header, attrs)],
  };
}

/** `ip route replace` (NLM_F_CREATE|NLM_F_REPLACE): atomically swaps the route in the slot (table, dst, metric). */
export async function replaceRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  await sendOne(nl, `replace route ${describeRoute(r, linkName)}`, routeRequest(r, 'replace'));
}

/**
 * `ip route del` with every field of the route, protocol included: the kernel matches protocol, gateway, oif,
 * prefsrc (IPv4), scope and type, so a foreign route to the same destination is not removed. A missing route
 * is ESRCH.
 */
export async function deleteRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  await sendOne(nl, `delete route ${describeRoute(r, linkName)}`, routeRequest(r, 'del'));
}
