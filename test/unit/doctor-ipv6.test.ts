// The doctor's IPv6 checks (src/doctor/ipv6.ts): main preferring a secondary ENI for IPv6, and accept_ra off on an
// ENI whose table needs an IPv6 default route.
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildDesired } from '../../src/core/desired';
import type { ImdsSnapshot, KernelLink, KernelRoute, KernelState } from '../../src/core/types';
import { checkImds, runChecks } from '../../src/doctor/checks';
import { acceptsRa, checkAcceptRa, checkIpv6MainRoutes, ipv6OnlyImdsHint } from '../../src/doctor/ipv6';
import type { DoctorFacts } from '../../src/doctor/types';
import { eni } from '../helpers/kernel-model';

const config = defaultConfig({});
const SUBNET6 = '2600:1f18:aaaa:bb01::/64';
const ROUTER = 'fe80::ec:2aff:fe00:101';
const eth0: KernelLink = { index: 2, name: 'eth0', mac: '02:00:00:00:00:10', up: true };
const eth1: KernelLink = { index: 3, name: 'eth1', mac: '02:00:00:00:00:20', up: true };
const snapshot: ImdsSnapshot = {
  primaryMac: eth0.mac, pending: [],
  enis: [
    eni(eth0.mac, 0, ['10.0.1.10'], { ipv6s: ['2600:1f18:aaaa:bb01::10'], subnetIpv6Cidrs: [SUBNET6] }),
    eni(eth1.mac, 1, ['10.0.1.20'], { ipv6s: ['2600:1f18:aaaa:bb01::20'], subnetIpv6Cidrs: [SUBNET6] }),
  ],
};
/** What a router advertisement leaves in main for a link (`proto ra`). */
const ra = (link: KernelLink, metric: number, dst = '::/0'): KernelRoute => ({
  family: 6, table: 254, dst, ...(dst === '::/0' ? { gateway: ROUTER } : {}), ifindex: link.index, protocol: 9, scope: 0, type: 1, metric,
});
const mainDefault4: KernelRoute = { family: 4, table: 254, dst: '0.0.0.0/0', gateway: '10.0.1.1', ifindex: 2, protocol: 16, scope: 0, type: 1, metric: 100 };

function facts(routes: KernelRoute[], sysctl6: Record<string, number> = {}): DoctorFacts {
  const base: KernelState = { links: [eth0, eth1], addresses: [], routes: [mainDefault4, ...routes], rules: [] };
  const desired = buildDesired(snapshot, base, config);
  return {
    config, kernel: { ...base, routes: [...base.routes, ...desired.routes], rules: desired.rules }, desired, snapshot,
    mtu: { eth0: 9001, eth1: 9001 },
    sysctl: { 'all.rp_filter': 0, 'eth1.rp_filter': 2, 'all.arp_ignore': 1, 'all.arp_announce': 2 },
    sysctl6: { 'all.forwarding': 0, 'eth0.accept_ra': 1, 'eth0.forwarding': 0, 'eth1.accept_ra': 1, 'eth1.forwarding': 0, ...sysctl6 },
    imds: { token: 'ok' },
    iptables: { nft: { dockerChains: false, ourChain: false }, legacy: { dockerChains: false, ourChain: false } },
    networkd: { state: 'absent', files: [], evidence: [] },
    managers: [],
    daemonRunning: true,
  };
}
const severities = (fs: { severity: string }[]): string[] => fs.map((f) => f.severity);

describe('ra-routes', () => {
  it('ok when main prefers the primary (ENIs with distinct RA metrics)', () => {
    // Every link's own fe80::/64 (metric 256, kernel) competes with nothing.
    const kernelLl = (link: KernelLink): KernelRoute => ({ family: 6, table: 254, dst: 'fe80::/64', ifindex: link.index, protocol: 2, scope: 0, type: 1, metric: 256 });
    const f = facts([ra(eth0, 512), ra(eth0, 512, SUBNET6), ra(eth1, 522), ra(eth1, 522, SUBNET6), kernelLl(eth0), kernelLl(eth1)]);
    expect(checkIpv6MainRoutes(f)).toEqual([{ check: 'ra-routes', severity: 'ok', message: 'the main table prefers eth0 for IPv6' }]);
    expect(runChecks(f).filter((x) => x.severity === 'warn' || x.severity === 'error')).toEqual([]);
    // Without IPv6 routes in main (an IPv4-only instance) there is nothing to say.
    expect(checkIpv6MainRoutes(facts([kernelLl(eth0), kernelLl(eth1)]))).toEqual([]);
  });

  it('a plain kernel: one RA default route per ENI at 1024 is a warning, for the default and the shared subnet', () => {
    const found = checkIpv6MainRoutes(facts([ra(eth0, 1024), ra(eth0, 1024, SUBNET6), ra(eth1, 1024), ra(eth1, 1024, SUBNET6)]));
    expect(severities(found)).toEqual(['warn', 'warn']);
    expect(found[0]?.message).toContain('an IPv6 default route via eth1 (metric 1024, from its router advertisement) level with eth0\'s (metric 1024)');
    expect(found[1]?.message).toContain(`the on-link route for ${SUBNET6} via eth1`);
    expect(found[0]?.fix).toContain('RouteMetric=');
  });

  it('a secondary ahead of the primary, or the only IPv6 default route, is an error; a worse one is fine', () => {
    expect(severities(checkIpv6MainRoutes(facts([ra(eth0, 1024), ra(eth1, 512)])))).toEqual(['error']);
    const only = checkIpv6MainRoutes(facts([ra(eth1, 1024)]));
    expect(severities(only)).toEqual(['error']);
    expect(only[0]?.message).toContain('and eth0 has none');
    expect(severities(checkIpv6MainRoutes(facts([ra(eth0, 1024), ra(eth1, 2048)])))).toEqual(['ok']);
    // The secondary's own subnet (not the primary's) competes with nothing.
    expect(severities(checkIpv6MainRoutes(facts([ra(eth0, 512), ra(eth1, 512, '2600:1f18:aaaa:bb02::/64')])))).toEqual(['ok']);
  });
});

describe('accept-ra', () => {
  it('reads the kernel\'s rule: 0 never, 1 unless the link forwards, 2 always', () => {
    const f = (acceptRa: number, forwarding: number) => ({ sysctl6: { 'eth1.accept_ra': acceptRa, 'eth1.forwarding': forwarding } });
    expect([acceptsRa(f(0, 0), 'eth1'), acceptsRa(f(1, 0), 'eth1'), acceptsRa(f(1, 1), 'eth1'), acceptsRa(f(2, 1), 'eth1')]).toEqual([false, true, false, true]);
    expect(acceptsRa({ sysctl6: {} }, 'eth1')).toBeUndefined();
  });

  it('error when RAs are off on a secondary ENI with IPv6 and no router is learned; the fix names the sysctl', () => {
    const found = checkAcceptRa(facts([ra(eth0, 512)], { 'eth1.accept_ra': 0 }));
    expect(severities(found)).toEqual(['error']);
    expect(found[0]?.message).toContain('net.ipv6.conf.eth1.accept_ra=0');
    expect(found[0]?.message).toContain('table 10001 needs an IPv6 default route');
    expect(found[0]?.fix).toContain('sysctl -w net.ipv6.conf.eth1.accept_ra=2');
  });

  it('forwarding on (Docker with IPv6) turns accept_ra=1 off: said so', () => {
    const found = checkAcceptRa(facts([ra(eth0, 512)], { 'eth1.forwarding': 1, 'all.forwarding': 1 }));
    expect(severities(found)).toEqual(['error']);
    expect(found[0]?.message).toContain('with forwarding=1');
  });

  it('info when a router is learned anyway (networkd handles RAs itself); ok when RAs are accepted; nothing without IPv6', () => {
    expect(severities(checkAcceptRa(facts([ra(eth0, 512), ra(eth1, 522)], { 'eth1.accept_ra': 0 })))).toEqual(['info']);
    expect(severities(checkAcceptRa(facts([ra(eth0, 512), ra(eth1, 522)])))).toEqual(['ok']);
    const v4only: ImdsSnapshot = { ...snapshot, enis: snapshot.enis.map((e) => ({ ...e, ipv6s: [], subnetIpv6Cidrs: [] })) };
    const f = facts([], { 'eth1.accept_ra': 0 });
    expect(checkAcceptRa({ ...f, desired: buildDesired(v4only, f.kernel, config) })).toEqual([]);
  });
});

describe('imds on an IPv6-only instance', () => {
  const unreachable = { token: 'unreachable' as const, reason: 'connect ENETUNREACH 169.254.169.254:80', v1: false };

  it('IMDS unreachable at its IPv4 endpoint on a host without IPv4: the fix is the IPv6 endpoint', () => {
    const f = facts([ra(eth0, 512)]);
    const v6only = { ...f, imds: unreachable, kernel: { ...f.kernel, addresses: [
      { ifindex: 1, family: 4 as const, address: '127.0.0.1', prefixLen: 8 },
      { ifindex: 2, family: 6 as const, address: '2600:1f18:aaaa:bb01::10', prefixLen: 128 },
    ] } };
    const found = checkImds(v6only).find((x) => x.check === 'imds');
    expect(found?.severity).toBe('error');
    expect(found?.fix).toContain('imds.endpoint');
    expect(found?.fix).toContain('http://[fd00:ec2::254]');
  });

  it('no hint with an IPv4 address on the host, or with the IPv6 endpoint configured', () => {
    const f = facts([]);
    const withV4 = { ...f, kernel: { ...f.kernel, addresses: [{ ifindex: 2, family: 4 as const, address: '10.0.1.10', prefixLen: 24 }] } };
    expect(ipv6OnlyImdsHint(withV4)).toBeUndefined();
    expect(ipv6OnlyImdsHint({ ...f, config: { ...config, imds: { ...config.imds, endpoint: 'http://[fd00:ec2::254]' } } })).toBeUndefined();
    // Nothing known about the host's addresses: no guess either.
    expect(ipv6OnlyImdsHint(f)).toBeUndefined();
  });
});
