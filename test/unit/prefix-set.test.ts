import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bigIntToIpv6, intToIpv4, networkOf, parseCidr } from '../../src/core/ip';
import { PrefixSet, prefixesOverlap, rangeOf } from '../../src/core/prefix-set';

// Addresses near each other (a few high bits), so that overlaps and nesting are common.
const v4 = fc.tuple(fc.integer({ min: 0, max: 7 }), fc.nat(0xffffffff), fc.integer({ min: 0, max: 32 }))
  .map(([hi, lo, len]) => `${intToIpv4(((hi * 2 ** 29) + (lo % 2 ** 29)) >>> 0)}/${len}`);
const v6 = fc.tuple(fc.bigInt({ min: 0n, max: 7n }), fc.bigInt({ min: 0n, max: (1n << 125n) - 1n }), fc.integer({ min: 0, max: 128 }))
  .map(([hi, lo, len]) => `${bigIntToIpv6((hi << 125n) | lo)}/${len}`);
/** Host prefixes and short ones, as ENI sources are (/32s and delegated /28s) and foreign rules may be. */
const v4Narrow = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.constantFrom(32, 32, 32, 28, 24, 16))
  .map(([low, len]) => `10.0.1.${low}/${len}`);
const prefix = fc.oneof(v4, v6, v4Narrow);

describe('prefixesOverlap', () => {
  it.each([
    ['10.0.1.20/32', '10.0.1.20/32', true], ['10.0.1.64/28', '10.0.1.70/32', true], ['10.0.1.70/32', '10.0.1.64/28', true],
    ['10.0.1.0/24', '10.0.1.64/28', true], ['10.0.1.20/32', '10.0.1.21/32', false], ['10.0.1.64/28', '10.0.1.80/28', false],
    ['10.0.1.20/32', 'fd00::1/128', false], ['fd00::/64', 'fd00::5/128', true], ['bogus', '10.0.1.20/32', false],
    ['10.0.1.20', '10.0.1.20/32', true], ['0.0.0.0/0', '255.255.255.255/32', true], ['::/0', '10.0.0.0/8', false],
  ])('%s vs %s: %s', (a, b, want) => {
    expect(prefixesOverlap(a, b)).toBe(want);
  });

  it('agrees with comparing the networks as text at the shorter length, for any two prefixes, /0 and host routes included', () => {
    const byText = (a: string, b: string): boolean => {
      const [ca, cb] = [parseCidr(a), parseCidr(b)];
      if (ca === undefined || cb === undefined || ca.family !== cb.family) return false;
      const len = Math.min(ca.prefixLen, cb.prefixLen);
      return networkOf({ ...ca, prefixLen: len }) === networkOf({ ...cb, prefixLen: len });
    };
    fc.assert(fc.property(prefix, prefix, (a, b) => prefixesOverlap(a, b) === byText(a, b)), { numRuns: 2000 });
  });
});

describe('PrefixSet', () => {
  it('answers as asking prefixesOverlap of each member would, for any set and any prefix (nested members included)', () => {
    fc.assert(fc.property(fc.array(prefix, { maxLength: 40 }), prefix, (members, p) => {
      const range = rangeOf(p);
      if (range === undefined) return true;
      return new PrefixSet(members).overlaps(range) === members.some((m) => prefixesOverlap(m, p));
    }), { numRuns: 3000 });
  });

  it('finds a member that starts before the query and covers it past shorter members in between', () => {
    // 10.0.0.0/8 starts first; 10.0.0.5/32 starts after it but ends before 10.0.0.9: only the prefix maximum sees the /8.
    const set = new PrefixSet(['10.0.0.5/32', '10.0.0.0/8']);
    expect(set.overlaps(rangeOf('10.0.0.9/32') as NonNullable<ReturnType<typeof rangeOf>>)).toBe(true);
    expect(set.overlaps(rangeOf('11.0.0.9/32') as NonNullable<ReturnType<typeof rangeOf>>)).toBe(false);
    expect(new PrefixSet(['bogus', 'fd00::/64']).overlaps(rangeOf('10.0.0.1/32') as NonNullable<ReturnType<typeof rangeOf>>)).toBe(false);
  });
});
