// The last good state per ENI and per part (src/core/last-good.ts) and one owner per address (buildDesired):
// nothing that works is torn down because one IMDS read was incomplete, inconsistent or malformed.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config';
import { buildDesired, oneOwnerPerAddress } from '../../src/core/desired';
import { mergeRead, type EniRead, type ImdsRead } from '../../src/core/last-good';
import type { EniInfo, ImdsSnapshot, KernelLink } from '../../src/core/types';
import { eni } from '../helpers/kernel-model';

const config = defaultConfig({});
const M0 = '02:00:00:00:00:10';
const M1 = '02:00:00:00:00:20';
const M2 = '02:00:00:00:00:30';
const links: KernelLink[] = [
  { index: 2, name: 'eth0', mac: M0, up: true }, { index: 3, name: 'eth1', mac: M1, up: true }, { index: 4, name: 'eth2', mac: M2, up: true },
];
const v6 = { ipv6s: ['2600:1f18::20'], subnetIpv6Cidrs: ['2600:1f18::/64'] };
const e0 = eni(M0, 0, ['10.0.1.10']);
const e1 = eni(M1, 1, ['10.0.1.20', '10.0.1.21'], v6);
const e2 = eni(M2, 2, ['10.0.1.30']);
const good: ImdsSnapshot = mergeRead(undefined, read([ready(e0), ready(e1), ready(e2)]), links);

function ready(e: EniInfo, unsettled: Array<{ part: 'ipv4' | 'ipv6'; reason: string }> = []): EniRead {
  const blank = (part: 'ipv4' | 'ipv6'): Partial<EniInfo> => (part === 'ipv4'
    ? { ipv4s: [], ipv4Prefixes: [], subnetIpv4Cidr: '' } : { ipv6s: [], ipv6Prefixes: [], subnetIpv6Cidrs: [] });
  return { mac: e.mac, status: 'ready', eni: Object.assign({ ...e }, ...unsettled.map((u) => blank(u.part))), unsettled };
}
function read(enis: EniRead[], partial = false): ImdsRead {
  return { primaryMac: M0, macs: enis.map((e) => e.mac), enis, partial };
}
const byMac = (s: ImdsSnapshot, mac: string): EniInfo | undefined => s.enis.find((e) => e.mac === mac);

describe('mergeRead: last good state per ENI', () => {
  it('takes a consistent read as it is', () => {
    expect(good.enis).toEqual([e0, e1, e2]);
    expect(good.held).toEqual([]);
    const moved = eni(M1, 1, ['10.0.1.20'], v6);
    const next = mergeRead(good, read([ready(e0), ready(moved), ready(e2)]), links);
    expect(byMac(next, M1)?.ipv4s).toEqual(['10.0.1.20']);
  });

  it('keeps the whole ENI when one of its identity keys 404s or is malformed, and says why', () => {
    const next = mergeRead(good, read([ready(e0), { mac: M1, status: 'pending', reason: 'IMDS key absent: interface-id' },
      { mac: M2, status: 'invalid', reason: 'IMDS /x/interface-id: not an ENI id (eni-<hex>): "-j ACCEPT"' }]), links);
    expect(next.enis).toEqual([e0, e1, e2]);
    expect(next.held).toEqual([
      { mac: M1, interfaceId: e1.interfaceId, part: 'all', reason: 'IMDS key absent: interface-id' },
      { mac: M2, interfaceId: e2.interfaceId, part: 'all', reason: 'IMDS /x/interface-id: not an ENI id (eni-<hex>): "-j ACCEPT"' },
    ]);
  });

  it('keeps only the IPv4 part when an IPv4 key 404s, and takes the IPv6 part of the same read', () => {
    const newer = { ...e1, ipv6s: ['2600:1f18::20', '2600:1f18::21'] };
    const next = mergeRead(good, read([ready(e0), ready(newer, [{ part: 'ipv4', reason: 'IMDS key absent: subnet-ipv4-cidr-block' }]), ready(e2)]), links);
    expect(byMac(next, M1)).toEqual({ ...e1, ipv6s: ['2600:1f18::20', '2600:1f18::21'] });
    expect(next.held).toEqual([{ mac: M1, interfaceId: e1.interfaceId, part: 'ipv4', reason: 'IMDS key absent: subnet-ipv4-cidr-block' }]);
  });

  it('keeps the IPv4 part going when IPv6 is listed before its subnet', () => {
    const reason = 'IPv6 addresses listed but subnet-ipv6-cidr-blocks absent (IMDS not yet consistent)';
    // Known ENI: its IPv6 part stays as it was, its IPv4 part follows IMDS.
    const next = mergeRead(good, read([ready(e0), ready({ ...e1, ipv4s: ['10.0.1.20'] }, [{ part: 'ipv6', reason }]), ready(e2)]), links);
    expect(byMac(next, M1)).toEqual({ ...e1, ipv4s: ['10.0.1.20'] });
    // New ENI: configured for IPv4 at once; IPv6 waits.
    const fresh = mergeRead(undefined, read([ready(e0), ready(e1, [{ part: 'ipv6', reason }])]), links);
    expect(byMac(fresh, M1)).toMatchObject({ ipv4s: e1.ipv4s, ipv6s: [] });
    expect(fresh.held).toEqual([{ mac: M1, interfaceId: e1.interfaceId, part: 'ipv6', reason, waiting: true }]);
  });

  it('never configures a new ENI whose IPv4 part is unsettled', () => {
    const next = mergeRead(undefined, read([ready(e0), ready(e1, [{ part: 'ipv4', reason: 'IMDS key absent: local-ipv4s' }])]), links);
    expect(next.enis.map((e) => e.mac)).toEqual([M0]);
    expect(next.pending).toEqual([{ mac: M1, reason: 'IMDS key absent: local-ipv4s' }]);
  });

  it('keeps an ENI IMDS stops listing while its link is here; drops it when the link is gone', () => {
    const next = mergeRead(good, read([ready(e0), ready(e2)]), links);
    expect(next.enis).toEqual([e0, e1, e2]);
    expect(next.held?.[0]).toMatchObject({ mac: M1, unlisted: true });
    expect(mergeRead(good, read([ready(e0), ready(e2)]), links.filter((l) => l.mac !== M1)).enis).toEqual([e0, e2]);
  });

  it('a targeted read changes only the ENIs it read', () => {
    const next = mergeRead(good, read([ready({ ...e2, ipv4s: ['10.0.1.30', '10.0.1.31'] })], true), []);
    expect(next.enis).toEqual([e0, e1, { ...e2, ipv4s: ['10.0.1.30', '10.0.1.31'] }]);
  });

  it('two ENIs claiming one slot: the one that had it keeps it, the other keeps its own last good state', () => {
    const next = mergeRead(good, read([ready(e0), ready(e1), ready({ ...e2, deviceNumber: 1 })]), links);
    expect(next.enis).toEqual([e0, e1, e2]);
    expect(next.held).toEqual([expect.objectContaining({ mac: M2, part: 'all', reason: expect.stringContaining('is also claimed by') })]);
    const fresh = mergeRead(undefined, read([ready(e0), ready(e1), ready({ ...e2, deviceNumber: 1 })]), links);
    expect(fresh.enis.map((e) => e.mac)).toEqual([M0]);
    expect(fresh.pending.map((p) => p.mac)).toEqual([M1, M2]);
  });

  it('property: an ENI read inconsistently never loses anything it had; a consistent read is taken as it is', () => {
    const outcome = fc.constantFrom('ready', 'ipv4', 'ipv6', 'both', 'pending', 'invalid', 'unlisted');
    fc.assert(fc.property(fc.tuple(outcome, outcome), fc.array(fc.constantFrom('10.0.1.40', '10.0.1.41', '10.0.1.42')), ([o1, o2], extra) => {
      const reads: EniRead[] = [ready(e0)];
      const changed = (e: EniInfo): EniInfo => ({ ...e, ipv4s: [e.ipv4s[0] ?? '', ...new Set(extra)], ipv6s: [] });
      for (const [o, e] of [[o1, e1], [o2, e2]] as const) {
        if (o === 'ready') reads.push(ready(changed(e)));
        else if (o === 'ipv4' || o === 'ipv6') reads.push(ready(changed(e), [{ part: o, reason: 'r' }]));
        else if (o === 'both') reads.push(ready(changed(e), [{ part: 'ipv4', reason: 'r' }, { part: 'ipv6', reason: 'r' }]));
        else if (o !== 'unlisted') reads.push({ mac: e.mac, status: o, reason: 'r' });
      }
      const next = mergeRead(good, read(reads), links);
      for (const [o, e] of [[o1, e1], [o2, e2]] as const) {
        const got = byMac(next, e.mac);
        expect(got).toBeDefined();
        if (o === 'ready') expect(got).toEqual(changed(e));
        if (o !== 'ready' && o !== 'ipv6') expect(got?.ipv4s).toEqual(e.ipv4s);
        if (o !== 'ready' && o !== 'ipv4') expect(got?.ipv6s).toEqual(e.ipv6s);
        expect((next.held ?? []).some((h) => h.mac === e.mac)).toBe(o !== 'ready');
      }
    }), { numRuns: 300 });
  });
});

describe('mergeRead: IPv6-only ENIs', () => {
  const only6 = eni(M1, 1, [], { subnetIpv4Cidr: '', ...v6 });

  it('takes an ENI never read with IPv4 as IPv6-only', () => {
    const next = mergeRead(undefined, read([ready(e0), ready(only6)]), links);
    expect(byMac(next, M1)).toEqual(only6);
    expect(next.held).toEqual([]);
    // ... and it stays so, and becomes dual-stack when IMDS gives it IPv4.
    expect(byMac(mergeRead(next, read([ready(e0), ready(only6)]), links), M1)).toEqual(only6);
    expect(byMac(mergeRead(next, read([ready(e0), ready(e1)]), links), M1)).toEqual(e1);
  });

  it('an ENI that had IPv4 and reads without it is held on its IPv4, never taken as IPv6-only', () => {
    const next = mergeRead(good, read([ready(e0), ready({ ...e1, ipv4s: [], subnetIpv4Cidr: '' }), ready(e2)]), links);
    expect(byMac(next, M1)).toEqual(e1);
    expect(next.held).toEqual([{ mac: M1, interfaceId: e1.interfaceId, part: 'ipv4', reason: expect.stringContaining('had a primary private IPv4') }]);
  });

  it('an IPv6-only ENI whose IPv6 part reads unsettled is held whole', () => {
    const known = mergeRead(undefined, read([ready(e0), ready(only6)]), links);
    const reason = 'IMDS keys absent: local-ipv4s, subnet-ipv4-cidr-block';
    const next = mergeRead(known, read([ready(e0), ready(only6, [{ part: 'ipv4', reason }, { part: 'ipv6', reason: 'r6' }])]), links);
    expect(byMac(next, M1)).toEqual(only6);
    expect(next.held).toEqual([{ mac: M1, interfaceId: only6.interfaceId, part: 'all', reason }]);
  });
});

describe('one owner per address', () => {
  const a = eni(M1, 1, ['10.0.1.20', '10.0.1.22']);
  const b = eni(M2, 2, ['10.0.1.30', '10.0.1.22']);
  const snap: ImdsSnapshot = { primaryMac: M0, enis: [e0, a, b], pending: [] };
  const on = (ifindex: number, address: string) => ({ ifindex, family: 4 as const, address, prefixLen: 24 });
  const fromRules = (d: ReturnType<typeof buildDesired>) => d.rules.filter((r) => r.src === '10.0.1.22/32').map((r) => r.table);

  it('an address listed on two ENIs stays where it is configured, with one rule, and one note naming both ENIs', () => {
    const d = buildDesired(snap, { links, addresses: [on(3, '10.0.1.20'), on(3, '10.0.1.22')] }, config);
    expect(fromRules(d)).toEqual([10001]);
    expect(d.addresses.filter((x) => x.address === '10.0.1.22').map((x) => x.ifindex)).toEqual([3]);
    expect(d.problems).toEqual([expect.stringMatching(/^10\.0\.1\.22 is listed by IMDS on both eni-1abc \(eth1\) and eni-2abc \(eth2\): kept on eth1/)]);
  });

  it('configured on neither (or on both): goes nowhere until IMDS agrees with itself', () => {
    for (const addresses of [[], [on(3, '10.0.1.22'), on(4, '10.0.1.22')]]) {
      const d = buildDesired(snap, { links, addresses }, config);
      expect(fromRules(d)).toEqual([]);
      expect(d.addresses.some((x) => x.address === '10.0.1.22')).toBe(false);
      expect(d.problems).toEqual([expect.stringContaining('configured on neither')]);
    }
  });

  it('once IMDS settles, the address moves', () => {
    const settled: ImdsSnapshot = { ...snap, enis: [e0, { ...a, ipv4s: ['10.0.1.20'] }, b] };
    const d = buildDesired(settled, { links, addresses: [on(3, '10.0.1.22')] }, config);
    expect(fromRules(d)).toEqual([10002]);
    expect(d.problems).toEqual([]);
  });

  it('property: never two from rules for one source at one priority', () => {
    const ip = fc.constantFrom('10.0.1.40', '10.0.1.41', '10.0.1.42');
    fc.assert(fc.property(fc.array(ip), fc.array(ip), fc.array(fc.tuple(fc.constantFrom(2, 3, 4), ip)), (x, y, present) => {
      const s: ImdsSnapshot = { primaryMac: M0, pending: [], enis: [e0, eni(M1, 1, ['10.0.1.20', ...x]), eni(M2, 2, ['10.0.1.30', ...y])] };
      const d = buildDesired(s, { links, addresses: present.map(([i, addr]) => on(i, addr)) }, config);
      const keys = d.rules.filter((r) => r.src !== undefined).map((r) => `${r.priority}|${r.src}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(oneOwnerPerAddress(s.enis, links, []).claims.size).toBe(new Set(x).size > 0 && x.some((v) => y.includes(v)) ? 2 : 0);
    }), { numRuns: 200 });
  });
});

describe('an ENI read that changed nothing keeps its object', () => {
  it('keeps the previous object exactly when every field is equal, else takes the new read', () => {
    const field = fc.constantFrom<keyof EniInfo>('deviceNumber', 'networkCard', 'interfaceId', 'subnetIpv4Cidr', 'ipv4s', 'ipv4Prefixes', 'ipv6s', 'ipv6Prefixes', 'subnetIpv6Cidrs');
    fc.assert(fc.property(fc.option(field, { nil: undefined }), (changed) => {
      const copy: EniInfo = structuredClone(e1);
      if (changed === 'deviceNumber') copy.deviceNumber = 7;
      else if (changed === 'networkCard') copy.networkCard = 1;
      else if (changed === 'interfaceId' || changed === 'subnetIpv4Cidr') copy[changed] = `${copy[changed]}x`;
      // A list that changes only in order changes too: the first IPv4 is the primary.
      else if (changed !== undefined && changed !== 'mac') copy[changed] = copy[changed].length > 1 ? [...copy[changed]].reverse() : [...copy[changed], '10.9.9.9'];
      const next = mergeRead(good, read([ready(e0), ready(copy), ready(e2)]), links);
      const got = byMac(next, M1);
      if (changed === undefined) expect(got).toBe(byMac(good, M1));
      else {
        expect(got).not.toBe(byMac(good, M1));
        expect(got).toEqual(copy);
      }
      expect(byMac(next, M0)).toBe(byMac(good, M0));
    }), { numRuns: 50 });
  });
});
