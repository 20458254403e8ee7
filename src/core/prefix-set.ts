// A set of CIDR prefixes that answers "does any of them share an address with this prefix?" in O(log n). Pure.
//
// Coexistence asks it for every foreign `from` rule and every ENI (src/core/coexistence.ts, findClaims). Compared
// pair by pair, one foreign rule cost a parse of each of the ENI's sources: 800 per rule at 15 × 50, and a host
// leaving ec2-net-utils (a rule per private IP, 700 at 15 × 50) made every plan take ~half a second.
import { ipv4ToInt, ipv6ToBigInt, parseCidr } from './ip';
import type { Family } from './types';

/** The addresses of a prefix as an inclusive range of integers (IPv4 as bigints too: one code path). */
export interface AddressRange {
  family: Family;
  lo: bigint;
  hi: bigint;
}

/** The range a CIDR covers (a bare address: the host prefix); undefined when it is not a CIDR. */
export function rangeOf(cidr: string): AddressRange | undefined {
  const c = parseCidr(cidr);
  if (c === undefined) return undefined;
  const bits = c.family === 4 ? 32 : 128;
  const value = c.family === 4 ? BigInt(ipv4ToInt(c.address)) : ipv6ToBigInt(c.address);
  const span = 1n << BigInt(bits - c.prefixLen);
  const lo = value - (value % span);
  return { family: c.family, lo, hi: lo + span - 1n };
}

/** True when two prefixes share at least one address (same family: the shorter contains the longer's network). */
export function prefixesOverlap(a: string, b: string): boolean {
  const ra = rangeOf(a);
  const rb = rangeOf(b);
  return ra !== undefined && rb !== undefined && ra.family === rb.family && ra.lo <= rb.hi && rb.lo <= ra.hi;
}

/** One family's ranges sorted by start, with the largest end among each index and those before it. */
class SortedRanges {
  private readonly starts: bigint[] = [];
  private readonly maxEnds: bigint[] = [];

  constructor(ranges: readonly AddressRange[]) {
    const sorted = [...ranges].sort((a, b) => (a.lo < b.lo ? -1 : a.lo > b.lo ? 1 : 0));
    let max = -1n;
    for (const r of sorted) {
      if (r.hi > max) max = r.hi;
      this.starts.push(r.lo);
      this.maxEnds.push(max);
    }
  }

  /** Any range that starts inside [lo, hi] overlaps it; of those that start before lo, one overlaps iff it reaches lo. */
  overlaps(lo: bigint, hi: bigint): boolean {
    let a = 0;
    let b = this.starts.length;
    while (a < b) {
      const mid = (a + b) >>> 1;
      if ((this.starts[mid] as bigint) < lo) a = mid + 1;
      else b = mid;
    }
    if (a < this.starts.length && (this.starts[a] as bigint) <= hi) return true;
    return a > 0 && (this.maxEnds[a - 1] as bigint) >= lo;
  }
}

export class PrefixSet {
  private readonly v4: SortedRanges;
  private readonly v6: SortedRanges;

  /** Strings that are not CIDRs are left out (they overlap nothing, as in prefixesOverlap). */
  constructor(cidrs: Iterable<string>) {
    const ranges = [...cidrs].map(rangeOf).filter((r): r is AddressRange => r !== undefined);
    this.v4 = new SortedRanges(ranges.filter((r) => r.family === 4));
    this.v6 = new SortedRanges(ranges.filter((r) => r.family === 6));
  }

  /** Whether a prefix of the set shares an address with `range` (same family). */
  overlaps(range: AddressRange): boolean {
    return (range.family === 4 ? this.v4 : this.v6).overlaps(range.lo, range.hi);
  }
}
