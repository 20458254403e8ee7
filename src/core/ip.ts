// Address arithmetic and validation. Pure: used by the IMDS parser (to reject bad values) and the planner.
import { isIPv4, isIPv6 } from 'node:net';
import type { Family } from './types';

export { isIPv4, isIPv6 };

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-cases and checks a MAC; returns undefined when it is not one. */
export function normalizeMac(value: string): string | undefined {
  const mac = value.trim().toLowerCase();
  return MAC_RE.test(mac) ? mac : undefined;
}

export function familyOf(address: string): Family | undefined {
  if (isIPv4(address)) return 4;
  if (isIPv6(address)) return 6;
  return undefined;
}

export interface Cidr {
  family: Family;
  /** The address as written (not masked). */
  address: string;
  prefixLen: number;
}

/** Parses `a.b.c.d/n` or `x::y/n`; a bare address gets the host prefix. Undefined when invalid. */
export function parseCidr(value: string): Cidr | undefined {
  const [address, len, extra] = value.trim().split('/');
  if (address === undefined || extra !== undefined) return undefined;
  const family = familyOf(address);
  if (family === undefined) return undefined;
  const max = family === 4 ? 32 : 128;
  if (len === undefined) return { family, address, prefixLen: max };
  if (!/^\d{1,3}$/.test(len)) return undefined;
  const prefixLen = Number(len);
  if (prefixLen > max) return undefined;
  return { family, address, prefixLen };
}

export function ipv4ToInt(address: string): number {
  return address.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}

export function intToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (Math.floor(value / 2 ** shift) % 256).toString()).join('.');
}

/** Expands an IPv6 address to a bigint. Caller guarantees isIPv6(address). */
export function ipv6ToBigInt(address: string): bigint {
  let text = address;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1] !== undefined) {
    const n = ipv4ToInt(v4[1]);
    text = text.slice(0, -v4[1].length) + `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = 8 - headParts.length - tailParts.length;
  const parts = tail === undefined ? headParts : [...headParts, ...Array<string>(fill).fill('0'), ...tailParts];
  return parts.reduce((acc, part) => (acc << 16n) + BigInt(parseInt(part, 16)), 0n);
}

export function bigIntToIpv6(value: bigint): string {
  const parts: string[] = [];
  for (let i = 7; i >= 0; i--) parts.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
  // Compress the longest run of zero hextets (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (parts[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}

/** Canonical text of an address (IPv6 compressed, lower case), so kernel and IMDS spellings compare equal. */
export function canonicalAddress(address: string): string {
  // Every IPv6 spelling has a colon: IPv4s (most of them) skip node's IPv6 expression, whose first use alone costs
  // ~10 ms of compiling on the start's critical path (the first IMDS read, 750 IPv4s at 15 × 50).
  return address.includes(':') && isIPv6(address) ? bigIntToIpv6(ipv6ToBigInt(address)) : address;
}

/** The network address of a CIDR, as `base/len` in canonical form. */
export function networkOf(cidr: Cidr): string {
  if (cidr.family === 4) {
    const mask = cidr.prefixLen === 0 ? 0 : (0xffffffff << (32 - cidr.prefixLen)) >>> 0;
    return `${intToIpv4((ipv4ToInt(cidr.address) & mask) >>> 0)}/${cidr.prefixLen}`;
  }
  const bits = BigInt(128 - cidr.prefixLen);
  const base = (ipv6ToBigInt(cidr.address) >> bits) << bits;
  return `${bigIntToIpv6(base)}/${cidr.prefixLen}`;
}

/** True when `address` lies inside `cidr`. */
export function cidrContains(cidr: Cidr, address: string): boolean {
  const family = familyOf(address);
  if (family !== cidr.family) return false;
  return networkOf({ ...cidr, address }) === networkOf(cidr);
}

/** The VPC router of an IPv4 subnet: its base address + 1 (true for every VPC subnet). */
export function subnetGateway(cidr: Cidr): string {
  const [base] = networkOf(cidr).split('/');
  return intToIpv4(ipv4ToInt(base ?? '0.0.0.0') + 1);
}

/** Normalises a CIDR string to `network/len`, or undefined when invalid. */
export function normalizeCidr(value: string): string | undefined {
  const cidr = parseCidr(value);
  return cidr === undefined ? undefined : networkOf(cidr);
}
