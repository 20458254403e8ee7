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
import { rt } from 'netlink';
import type { Family, KernelRoute } from '../core/types';
import {
  AF_INET,
  AF_INET6,
  KernelError,
  NLM_F_CREATE_EXCL,
  NLM_F_CREATE_REPLACE,
  RT_TABLE_COMPAT,
  afOf,
  body,
  enumNumber,
  familyOfAf,
  ipFromBuffer,
  ipToBuffer,
  prefixText,
  prefixToBuffer,
  type Netlink,
  type NetlinkRequest,
} from './netlink';

export const RT_TABLE_LOCAL = 255;
const RTN_UNICAST = 1;

export function routeFromMessage(msg: rt.RouteMessage): KernelRoute | undefined {
  const family = familyOfAf(msg.data.family);
  if (family === undefined) return undefined;
  // Cached clones (IPv6 exceptions) and source-specific IPv6 routes are never ec2netd's, and KernelRoute cannot
  // express them: listing them would make them look like plain routes to the same destination.
  if (msg.data.flags?.cloned === true || (msg.data.srcLen ?? 0) > 0) return undefined;
  const route: KernelRoute = {
    family,
    table: msg.attrs.table ?? msg.data.table ?? 0,
    dst: prefixText(family, msg.attrs.dst, msg.data.dstLen ?? 0),
    protocol: enumNumber(rt.RouteProtocol, msg.data.protocol),
    scope: enumNumber(rt.RouteScope, msg.data.scope),
    type: enumNumber(rt.RouteType, msg.data.type),
  };
  if (msg.attrs.gateway !== undefined) route.gateway = ipFromBuffer(msg.attrs.gateway);
  if (msg.attrs.oif !== undefined) route.ifindex = msg.attrs.oif;
  if (msg.attrs.prefsrc !== undefined) route.prefsrc = ipFromBuffer(msg.attrs.prefsrc);
  if (msg.attrs.priority !== undefined) route.metric = msg.attrs.priority;
  return route;
}

/**
 * Every table of IPv4 and IPv6. `skipLocal` drops table 255 (local/broadcast routes the kernel derives from
 * addresses): ec2netd never touches it, and it is the largest table on a host with many addresses.
 */
export async function dumpRoutes(nl: Netlink, options: { skipLocal?: boolean; family?: Family } = {}): Promise<KernelRoute[]> {
  const families = options.family === undefined ? [AF_INET, AF_INET6] : [afOf(options.family)];
  const routes: KernelRoute[] = [];
  for (const af of families) {
    const msgs = await nl.dump(`dump ${af === AF_INET ? 'IPv4' : 'IPv6'} routes`, rt.MessageType.GETROUTE, body((out) =>
      rt.formatRouteMessage({ kind: 'route', data: { family: af }, attrs: {} }, out)));
    for (const msg of msgs) {
      if (msg.kind !== 'route') continue;
      const route = routeFromMessage(msg);
      if (route === undefined || (options.skipLocal === true && route.table === RT_TABLE_LOCAL)) continue;
      routes.push(route);
    }
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

function request(r: KernelRoute): { data: rt.Route; attrs: rt.RouteAttrs } {
  const { addr, len } = prefixToBuffer(r.dst);
  const data: rt.Route = {
    family: afOf(r.family),
    dstLen: len,
    table: r.table > 255 ? RT_TABLE_COMPAT : r.table,
    protocol: r.protocol,
    scope: r.scope,
    type: r.type === 0 ? RTN_UNICAST : r.type,
  };
  const attrs: rt.RouteAttrs = { table: r.table };
  if (len > 0) attrs.dst = addr;
  if (r.gateway !== undefined) attrs.gateway = ipToBuffer(r.gateway);
  if (r.ifindex !== undefined) attrs.oif = r.ifindex;
  if (r.prefsrc !== undefined) attrs.prefsrc = ipToBuffer(r.prefsrc);
  if (r.metric !== undefined) attrs.priority = r.metric;
  return { data, attrs };
}

/**
 * `ip route add`: CREATE|EXCL. The kernel says EEXIST when any route holds the slot (table, dst, tos, metric),
 * whatever its gateway; so EEXIST is re-checked: it stays EEXIST only when an equal route (any protocol) is
 * there, else it becomes ECONFLICT naming the route in the way.
 */
export async function addRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  const what = `add route ${describeRoute(r, linkName)}`;
  const { data, attrs } = request(r);
  try {
    await nl.call(what, (o) => nl.socket.newRoute(data, attrs, o), NLM_F_CREATE_EXCL);
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
  const { data, attrs } = request(r);
  return {
    type: op === 'del' ? rt.MessageType.DELROUTE : rt.MessageType.NEWROUTE,
    flags: op === 'add' ? NLM_F_CREATE_EXCL : op === 'replace' ? NLM_F_CREATE_REPLACE : 0,
    body: body((out) => rt.formatRouteMessage({ kind: 'route', data, attrs }, out)),
  };
}

/** `ip route replace` (NLM_F_CREATE|NLM_F_REPLACE): atomically swaps the route in the slot (table, dst, metric). */
export async function replaceRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  const { data, attrs } = request(r);
  await nl.call(`replace route ${describeRoute(r, linkName)}`, (o) => nl.socket.newRoute(data, attrs, o), NLM_F_CREATE_REPLACE);
}

/**
 * `ip route del` with every field of the route, protocol included: the kernel matches protocol, gateway, oif,
 * prefsrc (IPv4), scope and type, so a foreign route to the same destination is not removed. A missing route
 * is ESRCH.
 */
export async function deleteRoute(nl: Netlink, r: KernelRoute, linkName?: string): Promise<void> {
  const { data, attrs } = request(r);
  await nl.call(`delete route ${describeRoute(r, linkName)}`, (o) => nl.socket.delRoute(data, attrs, o));
}
