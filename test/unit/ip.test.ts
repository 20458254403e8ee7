import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bigIntToIpv6, canonicalAddress, cidrContains, intToIpv4, ipv4ToInt, ipv6ToBigInt, networkOf, normalizeCidr, normalizeMac,
  parseCidr, subnetGateway,
} from '../../src/core/ip';

describe('address arithmetic', () => {
  it('parses and normalises CIDRs, refusing junk', () => {
    expect(parseCidr('10.0.1.5/24')).toEqual({ family: 4, address: '10.0.1.5', prefixLen: 24 });
    expect(parseCidr('10.0.1.5')).toEqual({ family: 4, address: '10.0.1.5', prefixLen: 32 });
    expect(normalizeCidr('10.0.1.77/28')).toBe('10.0.1.64/28');
    expect(normalizeCidr('2600:1F18:0:1::5/64')).toBe('2600:1f18:0:1::/64');
    for (const bad of ['10.0.1.5/33', '10.0.1/24', '10.0.1.5/2/4', '10.0.1.5/-1', '10.0.1.5/ 24', '::/129', '10.0.1.5; rm', '']) {
      expect(parseCidr(bad), bad).toBeUndefined();
    }
  });

  it('finds the VPC router (base + 1) and containment', () => {
    expect(subnetGateway(parseCidr('10.0.1.77/24')!)).toBe('10.0.1.1');
    expect(subnetGateway(parseCidr('172.31.32.0/20')!)).toBe('172.31.32.1');
    expect(cidrContains(parseCidr('10.0.1.0/24')!, '10.0.1.200')).toBe(true);
    expect(cidrContains(parseCidr('10.0.1.0/24')!, '10.0.2.1')).toBe(false);
    expect(cidrContains(parseCidr('10.0.1.0/24')!, 'fd00::1')).toBe(false);
  });

  it('canonicalises IPv6 the way the kernel prints it (RFC 5952)', () => {
    expect(canonicalAddress('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalAddress('2001:db8:0:1:0:0:0:0')).toBe('2001:db8:0:1::');
    expect(canonicalAddress('::ffff:10.0.0.1')).toBe('::ffff:a00:1');
    expect(canonicalAddress('fe80::1:0:0:1')).toBe('fe80::1:0:0:1');
  });

  it('leaves IPv4, and anything that is not an IPv6 address, as it is', () => {
    expect(canonicalAddress('10.0.1.20')).toBe('10.0.1.20');
    expect(canonicalAddress('::')).toBe('::');
    expect(canonicalAddress('1:2:3')).toBe('1:2:3');
    expect(canonicalAddress('not an address')).toBe('not an address');
  });

  it('every spelling of one IPv6 address or network is one canonical form', () => {
    for (const spelling of ['2600:1f16:67f:f201:0:0:0:0', '2600:1F16:067F:F201:0000:0000:0000:0000', '2600:1f16:67f:f201::', '2600:1f16:67f:f201:0::0']) {
      expect(canonicalAddress(spelling)).toBe('2600:1f16:67f:f201::');
      expect(normalizeCidr(`${spelling}/64`)).toBe('2600:1f16:67f:f201::/64');
    }
    expect(normalizeCidr('2600:1f16:67f:f201:dead:beef:0:1/64')).toBe('2600:1f16:67f:f201::/64');
    expect(canonicalAddress('2600:0:0:1:0:0:0:1')).toBe('2600:0:0:1::1');
    expect(canonicalAddress('2600:0:0:1:1:0:0:1')).toBe('2600::1:1:0:0:1');
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (n) => {
      const full = Array.from({ length: 8 }, (_, i) => ((n >> BigInt((7 - i) * 16)) & 0xffffn).toString(16).padStart(4, '0')).join(':');
      return canonicalAddress(full.toUpperCase()) === bigIntToIpv6(n) && canonicalAddress(bigIntToIpv6(n)) === bigIntToIpv6(n);
    }));
  });

  it('round-trips addresses (property)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => ipv4ToInt(intToIpv4(n)) === n));
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (n) => ipv6ToBigInt(bigIntToIpv6(n)) === n));
    fc.assert(fc.property(fc.ipV4(), fc.integer({ min: 0, max: 32 }), (ip, len) =>
      cidrContains(parseCidr(networkOf({ family: 4, address: ip, prefixLen: len }))!, ip)));
  });

  it('normalises MACs', () => {
    expect(normalizeMac('0A:EC:00:00:01:01')).toBe('0a:ec:00:00:01:01');
    expect(normalizeMac('0a:ec:00:00:01')).toBeUndefined();
    expect(normalizeMac('0a-ec-00-00-01-01')).toBeUndefined();
  });
});
