// The doctor's IPv6 checks (docs/ipv6.md, "Main table and the RA on secondary ENIs"; docs/doctor.md). Pure.
import { isLinkLocal6, learnedIpv6Router } from '../core/desired';
import { familyOf, ipv4ToInt } from '../core/ip';
import type { KernelRoute } from '../core/types';
import type { DoctorFacts, Finding } from './types';

const MAIN = 254;
/** The kernel's metric for an IPv6 route added without one (RA routes included). */
const IPV6_DEFAULT_METRIC = 1024;

function sys6(facts: Pick<DoctorFacts, 'sysctl6'>, iface: string, key: string): number | undefined {
  return facts.sysctl6?.[`${iface}.${key}`];
}

/**
 * Whether the kernel acts on router advertisements on `iface`: accept_ra 0 never; 1 only while the interface does
 * not forward (Docker with IPv6, a router, `net.ipv6.conf.all.forwarding=1` turn it off); 2 always. Undefined when
 * the sysctls could not be read (no IPv6 on the link).
 */
export function acceptsRa(facts: Pick<DoctorFacts, 'sysctl6'>, iface: string): boolean | undefined {
  const acceptRa = sys6(facts, iface, 'accept_ra');
  if (acceptRa === undefined) return undefined;
  return acceptRa === 2 || (acceptRa === 1 && sys6(facts, iface, 'forwarding') !== 1);
}

/**
 * Main preferring a secondary ENI for IPv6: a default route (or the primary's on-link subnet route) in main via a
 * secondary ENI at a better or equal metric than the primary's. A plain kernel with accept_ra on every link puts
 * one RA default route per ENI at metric 1024: replies from the primary's IPv6 (and from every unbound socket) can
 * leave through a secondary ENI and the VPC drops them.
 */
export function checkIpv6MainRoutes(facts: Pick<DoctorFacts, 'desired' | 'kernel'>): Finding[] {
  const main = facts.kernel.routes.filter((r) => r.table === MAIN && r.family === 6 && r.type === 1 && r.ifindex !== undefined);
  const metric = (r: KernelRoute): number => r.metric ?? IPV6_DEFAULT_METRIC;
  const primary = primaryLink(facts);
  if (primary === undefined) return [];
  const secondaries = new Map(facts.desired.enis.filter((d) => !d.primary && d.link.index !== primary.ifindex)
    .map((d) => [d.link.index, { name: d.link.name }]));
  const out: Finding[] = [];
  for (const r of main) {
    const sec = secondaries.get(r.ifindex ?? -1);
    if (sec === undefined) continue;
    const isDefault = r.dst === '::/0';
    // fe80::/64 is on every link, each its own: never a competition.
    if (isLinkLocal6(r.dst.split('/')[0] ?? '')) continue;
    const own = main.filter((p) => p.ifindex === primary.ifindex && p.dst === r.dst);
    // A secondary's subnet route that the primary does not share is its own subnet: nothing to compete with.
    if (!isDefault && own.length === 0) continue;
    const best = own.length === 0 ? undefined : Math.min(...own.map(metric));
    if (best !== undefined && metric(r) > best) continue;
    const what = isDefault ? 'an IPv6 default route' : `the on-link route for ${r.dst}`;
    const than = best === undefined
      ? `and ${primary.name} has none`
      : `${metric(r) < best ? 'ahead of' : 'level with'} ${primary.name}'s (metric ${best})`;
    out.push({
      check: 'ra-routes', severity: best !== undefined && metric(r) === best ? 'warn' : 'error',
      message: `the main table holds ${what} via ${sec.name} (metric ${metric(r)}, ${r.protocol === 9 ? 'from its router advertisement' : `protocol ${r.protocol}`}) ${than}: ` +
        `IPv6 traffic from the primary's addresses can leave through ${sec.name} and the VPC's source/destination check drops it`,
      fix: `give the ENIs distinct RA route metrics (networkd [IPv6AcceptRA] RouteMetric=, ec2-net-utils uses 512 + 10 * device-number) or keep ${sec.name}'s RA routes out of main ([IPv6AcceptRA] RouteTable=; ec2netd learns the router there too)`,
    });
  }
  if (out.length > 0) return out;
  // An instance without IPv6 routes in main has nothing to say here.
  const any6 = main.some((r) => !isLinkLocal6(r.dst.split('/')[0] ?? ''));
  return any6 ? [{ check: 'ra-routes', severity: 'ok', message: `the main table prefers ${primary.name} for IPv6` }] : [];
}

/** The primary ENI's link: from IMDS, else (IMDS silent) the link of main's IPv4 default route, as `eniLinks` does. */
function primaryLink(facts: Pick<DoctorFacts, 'desired' | 'kernel'>): { name: string; ifindex: number } | undefined {
  const own = facts.desired.enis.find((d) => d.primary);
  if (own !== undefined) return { name: own.link.name, ifindex: own.link.index };
  const def = facts.kernel.routes.find((r) => r.table === MAIN && r.family === 4 && r.dst === '0.0.0.0/0' && r.ifindex !== undefined);
  const link = facts.kernel.links.find((l) => l.index === def?.ifindex);
  return link === undefined ? undefined : { name: link.name, ifindex: link.index };
}

/**
 * accept_ra off on an ENI whose table needs an IPv6 default route: the router is learned from the RA only, so the
 * table gets no IPv6 default route. Error when no router is learned now; info when one is (networkd handles RAs in
 * userspace with the kernel's accept_ra 0, which is fine; a kernel RA route would expire with its lifetime).
 */
export function checkAcceptRa(facts: Pick<DoctorFacts, 'desired' | 'kernel' | 'sysctl6' | 'config'>): Finding[] {
  const out: Finding[] = [];
  const needing = facts.desired.enis.filter((d) => d.table !== undefined && d.eni.ipv6s.length + d.eni.ipv6Prefixes.length > 0);
  for (const d of needing) {
    const name = d.link.name;
    if (acceptsRa(facts, name) !== false) continue;
    const router = learnedIpv6Router(facts.kernel.routes, d.link.index, facts.config.protocol);
    const forwarding = sys6(facts, name, 'forwarding') === 1;
    const why = `net.ipv6.conf.${name}.accept_ra=${sys6(facts, name, 'accept_ra') ?? '?'}${forwarding ? ` with forwarding=1 (IPv6 forwarding on, e.g. Docker with IPv6: only accept_ra=2 is acted on)` : ''}`;
    out.push({
      check: 'accept-ra', severity: router === undefined ? 'error' : 'info',
      message: router === undefined
        ? `${why}: ${name}'s table ${d.table} needs an IPv6 default route via the router its advertisement names, and no router is learned on ${name}: IPv6 replies from ${name}'s addresses to other subnets fall through to main and leave through another ENI`
        : `${why}: the kernel ignores ${name}'s router advertisements; the router ${router} is learned from elsewhere (networkd handles RAs itself: fine) or from an RA route that expires with its lifetime, and table ${d.table} then loses its IPv6 default route`,
      fix: `sysctl -w net.ipv6.conf.${name}.accept_ra=2 (persist in /etc/sysctl.d/; 2 keeps RAs working when forwarding is on), or let networkd handle the RA ([Network] IPv6AcceptRA=yes)`,
    });
  }
  if (out.length === 0 && needing.length > 0) {
    out.push({ check: 'accept-ra', severity: 'ok', message: `router advertisements are accepted on ${needing.map((d) => d.link.name).join(', ')}` });
  }
  return out;
}

/**
 * An IPv6-only instance cannot reach IMDS's IPv4 endpoint: when the configured endpoint is an IPv4 address and the host
 * holds global IPv6 addresses and no IPv4 address but loopback and link-local ones, the fix is the IPv6 endpoint.
 * Undefined otherwise.
 */
export function ipv6OnlyImdsHint(facts: Pick<DoctorFacts, 'config' | 'kernel'>): string | undefined {
  const host = facts.config.imds.endpoint.replace(/^https?:\/\//, '').replace(/[/:].*$/, '');
  if (familyOf(host) !== 4) return undefined;
  const usable4 = facts.kernel.addresses.some((a) => a.family === 4 && familyOf(a.address) === 4 &&
    ipv4ToInt(a.address) >>> 24 !== 127 && ipv4ToInt(a.address) >>> 16 !== 0xa9fe);
  // Positive evidence only: a global IPv6 address and no usable IPv4 one.
  const global6 = facts.kernel.addresses.some((a) => a.family === 6 && familyOf(a.address) === 6 && !isLinkLocal6(a.address) && a.address !== '::1');
  if (usable4 || !global6) return undefined;
  return 'this host has no IPv4 address (an IPv6-only instance): IMDS is reachable only at http://[fd00:ec2::254]; set imds.endpoint to it ' +
    '(or AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6) and enable it: aws ec2 modify-instance-metadata-options --http-protocol-ipv6 enabled';
}
