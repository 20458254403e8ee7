// Reads what IMDS says about this instance's ENIs and validates every value before it reaches the planner.
//
// Outcomes:
// - A value that is present but wrong (bad syntax, out of range, outside its subnet, too many entries) throws an
//   ImdsValidationError naming the path and the value: the snapshot as a whole fails and the caller keeps its
//   last good state. IMDS is trusted to be IMDS, not to be well-formed.
// - A listed MAC whose data is not complete yet (eventual consistency after an attach) becomes a PendingEni with
//   the reason, and the caller retries it later (readEni).
// - Network/HTTP failures are the client's ImdsError, thrown as they are.
import type { EniInfo, ImdsSnapshot, PendingEni } from '../core/types';
import { canonicalAddress, cidrContains, isIPv4, isIPv6, networkOf, normalizeMac, parseCidr, type Cidr } from '../core/ip';
import { imdsPath, splitList, type ImdsReader } from './client';
import { ImdsError, ImdsValidationError } from './errors';

export interface SnapshotOptions {
  /** IMDS requests in flight at once (IMDS throttles at 1024 packets/s per ENI). Default 8. */
  concurrency?: number;
  /** Most entries accepted in any list (MACs, addresses, prefixes). Default 256. */
  maxListEntries?: number;
}

export type ReadEniResult = { status: 'ready'; eni: EniInfo } | { status: 'pending'; pending: PendingEni };

export const MACS_PATH = 'meta-data/network/interfaces/macs/';
const DEFAULT_CONCURRENCY = 8;
const DEFAULT_MAX_LIST = 256;
/** Device numbers and network-card indexes are small integers; 255 leaves room for any instance type. */
const MAX_INDEX = 255;
/** AWS subnets: IPv4 /16 to /28; IPv6 /44 to /64 (we accept /32 to /64). */
const IPV4_SUBNET_LEN = { min: 16, max: 28 };
const IPV6_SUBNET_LEN = { min: 32, max: 64 };

/** Keys whose absence (404) makes an ENI pending. */
const REQUIRED_KEYS = ['device-number', 'interface-id', 'local-ipv4s', 'subnet-ipv4-cidr-block'] as const;
/** Keys whose absence means "none". */
const OPTIONAL_KEYS = ['network-card', 'ipv4-prefix', 'ipv6s', 'ipv6-prefix', 'subnet-ipv6-cidr-blocks'] as const;
type EniKey = (typeof REQUIRED_KEYS)[number] | (typeof OPTIONAL_KEYS)[number] | 'network-card-index';

/** Reads the primary MAC, the MAC listing and every listed ENI. */
export async function readSnapshot(client: ImdsReader, options: SnapshotOptions = {}): Promise<ImdsSnapshot> {
  const ctx = context(client, options);
  const primaryPath = imdsPath('meta-data/mac');
  const primaryBody = await ctx.get('meta-data/mac');
  if (primaryBody === undefined) throw absent(primaryPath, 'the primary MAC');
  const primaryMac = parseMac(primaryPath, primaryBody);

  const listPath = imdsPath(MACS_PATH);
  const listing = await ctx.get(MACS_PATH);
  if (listing === undefined) throw absent(listPath, 'the MAC listing');
  // Canonical MAC -> the spelling IMDS listed (used in request paths; IMDS lists lower case, but do not assume).
  const macs = new Map<string, string>();
  for (const entry of capped(listPath, splitList(listing), ctx.maxList)) {
    if (!entry.endsWith('/')) throw new ImdsValidationError(listPath, 'listing entry is not a directory (`<mac>/`)', entry);
    const listed = entry.slice(0, -1);
    const mac = parseMac(listPath, listed);
    if (!macs.has(mac)) macs.set(mac, listed);
  }
  if (!macs.has(primaryMac)) {
    throw new ImdsValidationError(listPath, `the primary MAC ${primaryMac} is not listed`, listing);
  }

  const reads = await Promise.all([...macs].map(([mac, listed]) => readEniWith(ctx, mac, listed, mac === primaryMac)));
  // An instance either serves network-card for its ENIs or (single-card types, older IMDS) for none of them.
  const cardServed = reads.some((r) => r.cardServed);
  const enis: EniInfo[] = [];
  const pending: PendingEni[] = [];
  for (const { result, cardServed: own } of reads) {
    if (result.status === 'ready' && !own && cardServed && result.eni.mac !== primaryMac) pending.push(cardLagging(result.eni.mac));
    else if (result.status === 'ready') enis.push(result.eni);
    else pending.push(result.pending);
  }
  // Two ENIs on one (network-card, device-number) would share a routing table: IMDS is mid-change (a detached
  // ENI lingering). Keep the primary; hold the others back until IMDS agrees with itself.
  const slots = new Map<string, EniInfo[]>();
  for (const eni of enis) {
    const slot = `${eni.networkCard}/${eni.deviceNumber}`;
    slots.set(slot, [...(slots.get(slot) ?? []), eni]);
  }
  const clashing = new Set<string>();
  for (const group of slots.values()) {
    if (group.length < 2) continue;
    for (const eni of group) {
      if (eni.mac === primaryMac) continue;
      clashing.add(eni.mac);
      const others = group.filter((other) => other !== eni).map((other) => other.mac).join(', ');
      pending.push({
        mac: eni.mac,
        reason: `network-card ${eni.networkCard} device-number ${eni.deviceNumber} is also claimed by ${others} (IMDS not yet consistent)`,
      });
    }
  }
  return {
    primaryMac,
    enis: enis
      .filter((eni) => !clashing.has(eni.mac))
      .sort((a, b) => a.networkCard - b.networkCard || a.deviceNumber - b.deviceNumber || a.mac.localeCompare(b.mac)),
    pending: pending.sort((a, b) => a.mac.localeCompare(b.mac)),
  };
}

/** Reads one ENI (e.g. to retry a pending one). `primaryMac` decides whether device-number 0 is plausible. */
export async function readEni(
  client: ImdsReader, mac: string, primaryMac: string, options: SnapshotOptions = {},
): Promise<ReadEniResult> {
  const canonical = normalizeMac(mac);
  if (canonical === undefined) throw new ImdsValidationError(imdsPath(MACS_PATH), 'not a MAC address', mac);
  const ctx = context(client, options);
  const primary = canonical === normalizeMac(primaryMac);
  const { result, cardServed } = await readEniWith(ctx, canonical, canonical, primary);
  if (result.status !== 'ready' || cardServed || primary) return result;
  // network-card absent: trusted as 0 only when the instance serves it for no ENI. One more GET tells: the
  // primary ENI's entry (it is always listed, and always on card 0).
  const base = `${MACS_PATH}${normalizeMac(primaryMac) ?? primaryMac}/`;
  const served = (await ctx.get(`${base}network-card`)) !== undefined || (await ctx.get(`${base}network-card-index`)) !== undefined;
  return served ? { status: 'pending', pending: cardLagging(canonical) } : result;
}

/**
 * A non-primary ENI without network-card on an instance that serves the key for other ENIs: IMDS has not caught up
 * after the attach (docs/ec2-networking.md §3). Reading it as card 0 would configure a guess (card 0's table range,
 * and container mark slots), so it waits like any incomplete ENI.
 */
function cardLagging(mac: string): PendingEni {
  return { mac, reason: 'network-card absent while this instance reports it for other ENIs (IMDS not yet consistent)' };
}

interface Context {
  get(path: string): Promise<string | undefined>;
  maxList: number;
}

/**
 * Bounded concurrency over the reader. After the first failure, queued requests are not sent: the snapshot has
 * failed already and IMDS's packet budget is shared with everything else on the instance.
 */
function context(client: ImdsReader, options: SnapshotOptions): Context {
  const max = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
  let active = 0;
  let failed: unknown;
  const queue: Array<() => void> = [];
  const acquire = async (): Promise<void> => {
    if (active < max) {
      active++;
      return;
    }
    await new Promise<void>((resolve) => queue.push(resolve));
  };
  // The slot passes straight to the next waiter, so `active` never exceeds `max`.
  const release = (): void => {
    const next = queue.shift();
    if (next !== undefined) next();
    else active--;
  };
  return {
    maxList: options.maxListEntries ?? DEFAULT_MAX_LIST,
    async get(path: string): Promise<string | undefined> {
      await acquire();
      try {
        if (failed !== undefined) throw failed;
        return await client.get(path);
      } catch (err) {
        failed ??= err;
        throw err;
      } finally {
        release();
      }
    },
  };
}

/** `mac` is canonical (reported); `listed` is IMDS's spelling of it (requested). `cardServed`: network-card (or
 * network-card-index) was there. */
async function readEniWith(
  ctx: Context, mac: string, listed: string, primary: boolean,
): Promise<{ result: ReadEniResult; cardServed: boolean }> {
  const base = `${MACS_PATH}${listed}/`;
  const pathOf = (key: EniKey): string => imdsPath(base + key);
  const keys = [...REQUIRED_KEYS, ...OPTIONAL_KEYS];
  const bodies = await Promise.all(keys.map((key) => ctx.get(base + key)));
  const raw = new Map<EniKey, string | undefined>(keys.map((key, i) => [key, bodies[i]]));
  // Older IMDS versions (and the AWS mock) name it network-card-index.
  let cardKey: EniKey = 'network-card';
  if (raw.get('network-card') === undefined) {
    cardKey = 'network-card-index';
    raw.set(cardKey, await ctx.get(base + cardKey));
  }
  const value = (key: EniKey): string | undefined => raw.get(key);
  const list = (key: EniKey): string[] | undefined => {
    const body = value(key);
    if (body === undefined) return undefined;
    const entries = capped(pathOf(key), splitList(body), ctx.maxList);
    return entries.length === 0 ? undefined : entries;
  };

  // 1. Validate everything that is present, whether or not the ENI turns out complete: a hostile value anywhere
  //    fails the snapshot.
  const deviceBody = value('device-number');
  const deviceNumber = deviceBody === undefined ? undefined : parseIndex(pathOf('device-number'), deviceBody);
  const cardBody = value(cardKey);
  // Absent network-card ⇒ 0 here. On single-card instances IMDS may not serve the key at all; an instance that
  // serves it for other ENIs is lagging for this one: readSnapshot and readEni hold such an ENI back (cardLagging).
  const networkCard = cardBody === undefined ? 0 : parseIndex(pathOf(cardKey), cardBody);
  const cardServed = cardBody !== undefined;
  const idBody = value('interface-id');
  const interfaceId = idBody === undefined ? undefined : parseInterfaceId(pathOf('interface-id'), idBody);
  const subnetBody = value('subnet-ipv4-cidr-block');
  const subnet4 = subnetBody === undefined ? undefined : parseSubnet(pathOf('subnet-ipv4-cidr-block'), subnetBody, 4);
  const subnets6 = (list('subnet-ipv6-cidr-blocks') ?? []).map((entry) => parseSubnet(pathOf('subnet-ipv6-cidr-blocks'), entry, 6));
  const ipv4s = list('local-ipv4s')?.map((entry) => parseAddress(pathOf('local-ipv4s'), entry, 4, subnet4 ? [subnet4] : undefined));
  const ipv4Prefixes = (list('ipv4-prefix') ?? []).map((entry) =>
    parsePrefix(pathOf('ipv4-prefix'), entry, 4, subnet4 ? [subnet4] : undefined));
  const ipv6List = list('ipv6s') ?? [];
  const ipv6PrefixList = list('ipv6-prefix') ?? [];
  const within6 = subnets6.length > 0 ? subnets6 : undefined;
  const ipv6s = ipv6List.map((entry) => parseAddress(pathOf('ipv6s'), entry, 6, within6));
  const ipv6Prefixes = ipv6PrefixList.map((entry) => parsePrefix(pathOf('ipv6-prefix'), entry, 6, within6));

  // 2. Complete?
  const missing = REQUIRED_KEYS.filter((key) => key === 'local-ipv4s' ? ipv4s === undefined : value(key) === undefined);
  const pending = (reason: string): { result: ReadEniResult; cardServed: boolean } => ({ result: { status: 'pending', pending: { mac, reason } }, cardServed });
  if (missing.length > 0) return pending(`IMDS key${missing.length > 1 ? 's' : ''} absent: ${missing.join(', ')}`);
  // Right after an attach a non-primary MAC can read device-number 0: card 0 / device 0 is the primary's slot, so
  // that reading is not yet true. (On network cards > 0, device 0 is a legitimate slot and is accepted.)
  if (deviceNumber === 0 && networkCard === 0 && !primary) return pending('device-number reads 0 (IMDS not yet consistent)');
  if (within6 === undefined && (ipv6s.length > 0 || ipv6Prefixes.length > 0)) {
    return pending('IPv6 addresses listed but subnet-ipv6-cidr-blocks absent (IMDS not yet consistent)');
  }
  if (deviceNumber === undefined || interfaceId === undefined || ipv4s === undefined || subnet4 === undefined) {
    // Unreachable: `missing` covers these; kept so the types need no assertions.
    return pending('incomplete');
  }
  return {
    cardServed,
    result: {
      status: 'ready',
      eni: {
        mac,
        deviceNumber,
        networkCard,
        interfaceId,
        ipv4s: unique(ipv4s),
        ipv4Prefixes: unique(ipv4Prefixes),
        ipv6s: unique(ipv6s),
        ipv6Prefixes: unique(ipv6Prefixes),
        subnetIpv4Cidr: networkOf(subnet4),
        subnetIpv6Cidrs: unique(subnets6.map(networkOf)),
      },
    },
  };
}

function absent(path: string, what: string): ImdsError {
  return new ImdsError(path, `IMDS GET ${path}: ${what} is absent (HTTP 404)`, { kind: 'http', status: 404 });
}

function capped(path: string, entries: string[], max: number): string[] {
  if (entries.length > max) {
    throw new ImdsValidationError(path, `list has ${entries.length} entries, more than ${max}`, entries.slice(0, 3).join('\n'));
  }
  return entries;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function parseMac(path: string, body: string): string {
  const mac = normalizeMac(body);
  if (mac === undefined) throw new ImdsValidationError(path, 'not a MAC address', body);
  return mac;
}

function parseIndex(path: string, body: string): number {
  const text = body.trim();
  if (!/^\d{1,3}$/.test(text) || Number(text) > MAX_INDEX) {
    throw new ImdsValidationError(path, `not an integer from 0 to ${MAX_INDEX}`, body);
  }
  return Number(text);
}

function parseInterfaceId(path: string, body: string): string {
  const text = body.trim();
  if (!/^eni-[0-9a-f]{1,32}$/.test(text)) throw new ImdsValidationError(path, 'not an ENI id (eni-<hex>)', body);
  return text;
}

/** Only the characters of an address: rejects zone ids (fe80::1%eth0), spaces, and anything a shell would read. */
function plainAddress(text: string, family: 4 | 6): boolean {
  return family === 4 ? /^[0-9.]{7,15}$/.test(text) && isIPv4(text) : /^[0-9a-fA-F:.]{2,45}$/.test(text) && isIPv6(text);
}

function parseAddress(path: string, entry: string, family: 4 | 6, within: Cidr[] | undefined): string {
  const text = entry.trim();
  if (!plainAddress(text, family)) throw new ImdsValidationError(path, `not an IPv${family} address`, entry);
  if (within !== undefined && !within.some((subnet) => cidrContains(subnet, text))) {
    throw new ImdsValidationError(path, `address outside the subnet ${within.map(networkOf).join(', ')}`, entry);
  }
  return canonicalAddress(text);
}

function parseCidrOf(path: string, entry: string, family: 4 | 6): Cidr {
  const text = entry.trim();
  const [address = '', len] = text.split('/');
  const cidr = len === undefined || !plainAddress(address, family) ? undefined : parseCidr(text);
  if (cidr === undefined || cidr.family !== family) throw new ImdsValidationError(path, `not an IPv${family} CIDR`, entry);
  return cidr;
}

function parseSubnet(path: string, entry: string, family: 4 | 6): Cidr {
  const cidr = parseCidrOf(path, entry, family);
  const range = family === 4 ? IPV4_SUBNET_LEN : IPV6_SUBNET_LEN;
  if (cidr.prefixLen < range.min || cidr.prefixLen > range.max) {
    throw new ImdsValidationError(path, `subnet prefix length must be /${range.min} to /${range.max}`, entry);
  }
  return cidr;
}

/** A delegated prefix: canonical `network/len`, inside (and no larger than) one of the ENI's subnets. */
function parsePrefix(path: string, entry: string, family: 4 | 6, within: Cidr[] | undefined): string {
  const cidr = parseCidrOf(path, entry, family);
  if (within !== undefined && !within.some((subnet) => cidr.prefixLen >= subnet.prefixLen && cidrContains(subnet, cidr.address))) {
    throw new ImdsValidationError(path, `prefix outside the subnet ${within.map(networkOf).join(', ')}`, entry);
  }
  return networkOf(cidr);
}
