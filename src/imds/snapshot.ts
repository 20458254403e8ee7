// Reads what IMDS says about this instance's ENIs and validates every value before it reaches the planner.
//
// The result is per ENI, never all-or-nothing (docs/architecture.md, "the contract"):
// - The primary MAC and the MAC listing are the read itself: if either is absent or malformed, or IMDS does not
//   answer, the read fails as a whole (ImdsError) and the caller keeps its last good state for every ENI.
// - Each listed MAC is read on its own. An ENI whose identity (device-number, network-card, interface-id) is
//   incomplete (eventual consistency after an attach) is `pending`; one with a malformed identity value is
//   `invalid`, with an ImdsValidationError naming the path and the value.
// - Within a ready ENI, the IPv4 keys and the IPv6 keys are each settled or not: a 404 on one IPv4 key, IPv6
//   addresses listed before their subnet, a malformed address. An unsettled part is reported, and its fields are
//   empty; src/core/last-good.ts then keeps that part as the last consistent read had it.
// - An optional key (a delegated prefix, the IPv6 keys) is "none" only when the ENI's directory listing and the key
//   agree: listed but 404, or answering while the listing omits it, unsettles its part (docs/ipv6.md).
import { compareText } from '../core/compare';
import type { EniInfo, ImdsSnapshot } from '../core/types';
import { mergeRead, type EniRead, type ImdsRead, type EniPart } from '../core/last-good';
import { canonicalAddress, cidrContains, isIPv4, isIPv6, networkOf, normalizeMac, parseCidr, type Cidr } from '../core/ip';
import { imdsPath, splitList, type ImdsReader } from './client';
import { ImdsError, ImdsValidationError } from './errors';

export type { EniRead, ImdsRead } from '../core/last-good';

export interface SnapshotOptions {
  /** IMDS requests in flight at once (IMDS throttles at 1024 packets/s per ENI). Default 8. */
  concurrency?: number;
  /** Most entries accepted in any list (MACs, addresses, prefixes). Default 256. */
  maxListEntries?: number;
  /**
   * The last good state. An optional key an ENI had there is asked for even when the ENI's listing omits it: only
   * the listing and the key together say it is gone.
   */
  previous?: ImdsSnapshot;
}

export const MACS_PATH = 'meta-data/network/interfaces/macs/';
const DEFAULT_CONCURRENCY = 8;
const DEFAULT_MAX_LIST = 256;
/** Device numbers and network-card indexes are small integers; 255 leaves room for any instance type. */
const MAX_INDEX = 255;
/** AWS subnets: IPv4 /16 to /28; IPv6 /44 to /64 (we accept /32 to /64). */
const IPV4_SUBNET_LEN = { min: 16, max: 28 };
const IPV6_SUBNET_LEN = { min: 32, max: 64 };

/** Keys an ENI cannot be configured without: which table it gets, and its name in logs. */
const IDENTITY_KEYS = ['device-number', 'interface-id'] as const;
/** The IPv4 part: both, or neither on an IPv6-only ENI (one with IPv6 addresses or prefixes; docs/ipv6.md). */
const IPV4_KEYS = ['local-ipv4s', 'subnet-ipv4-cidr-block'] as const;
/**
 * Optional keys (their absence means "none"; so does network-card's, read with the keys every ENI has) that most ENIs do not have (no IPv6, no delegated prefix): asked for only when the ENI's directory
 * listing names them, as the VPC CNI does, or when the last good state has values for them. At 15 ENIs that is 92
 * requests a whole read instead of 137, without a round trip more: the listing is read together with the keys every
 * ENI has. The listing is IMDS's own view of the same ENI, but it is as eventually consistent as the rest: a key it
 * names that answers 404, or a key the ENI had that it stops naming but that still answers, is not a statement
 * that the values are gone, and the key's part is held (src/core/last-good.ts).
 */
const LISTED_ONLY_KEYS = ['ipv4-prefix', 'ipv6s', 'ipv6-prefix', 'subnet-ipv6-cidr-blocks'] as const;
type ListedOnlyKey = (typeof LISTED_ONLY_KEYS)[number];
const PART_OF: Record<ListedOnlyKey, EniPart> = {
  'ipv4-prefix': 'ipv4', 'ipv6s': 'ipv6', 'ipv6-prefix': 'ipv6', 'subnet-ipv6-cidr-blocks': 'ipv6',
};
/** Whether the last good state of an ENI has values for an optional key. */
const HAD: Record<ListedOnlyKey, (eni: EniInfo) => boolean> = {
  'ipv4-prefix': (eni) => eni.ipv4Prefixes.length > 0,
  'ipv6s': (eni) => eni.ipv6s.length > 0,
  'ipv6-prefix': (eni) => eni.ipv6Prefixes.length > 0,
  'subnet-ipv6-cidr-blocks': (eni) => eni.subnetIpv6Cidrs.length > 0,
};
type EniKey = (typeof IDENTITY_KEYS)[number] | (typeof IPV4_KEYS)[number] | ListedOnlyKey | 'network-card' | 'network-card-index';

/** Reads the primary MAC, the MAC listing and every listed ENI, each ENI on its own (see the top of this file). */
export async function readImds(client: ImdsReader, options: SnapshotOptions = {}): Promise<ImdsRead> {
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

  const reads = await Promise.all([...macs].map(([mac, listed]) => readEniWith(ctx, mac, listed, mac === primaryMac, hadOf(options, mac))));
  // An instance either serves network-card for its ENIs or (single-card types, older IMDS) for none of them.
  const cardServed = reads.some((r) => r.cardServed);
  return {
    primaryMac,
    macs: [...macs.keys()],
    enis: reads.map(({ result, cardServed: own }) =>
      result.status === 'ready' && !own && cardServed && result.mac !== primaryMac ? cardLagging(result.mac) : result),
  };
}

/** A whole read merged into nothing: what IMDS says now, for one-shot commands (doctor). */
export async function readSnapshot(client: ImdsReader, options: SnapshotOptions = {}): Promise<ImdsSnapshot> {
  return mergeRead(undefined, await readImds(client, options), []);
}

/** Reads one ENI (a targeted re-read). `primaryMac` decides whether device-number 0 is plausible. */
export async function readEni(
  client: ImdsReader, mac: string, primaryMac: string, options: SnapshotOptions = {},
): Promise<EniRead> {
  const canonical = normalizeMac(mac);
  if (canonical === undefined) throw new ImdsValidationError(imdsPath(MACS_PATH), 'not a MAC address', mac);
  const ctx = context(client, options);
  const primary = canonical === normalizeMac(primaryMac);
  const { result, cardServed } = await readEniWith(ctx, canonical, canonical, primary, hadOf(options, canonical));
  if (result.status !== 'ready' || cardServed || primary) return result;
  // network-card absent: trusted as 0 only when the instance serves it for no ENI. One more GET tells: the
  // primary ENI's entry (it is always listed, and always on card 0).
  const base = `${MACS_PATH}${normalizeMac(primaryMac) ?? primaryMac}/`;
  const served = (await ctx.get(`${base}network-card`)) !== undefined || (await ctx.get(`${base}network-card-index`)) !== undefined;
  return served ? cardLagging(canonical) : result;
}

function hadOf(options: SnapshotOptions, mac: string): EniInfo | undefined {
  return options.previous?.enis.find((eni) => eni.mac === mac);
}

/**
 * A non-primary ENI without network-card on an instance that serves the key for other ENIs: IMDS has not caught up
 * after the attach (docs/ec2-networking.md §3). Reading it as card 0 would configure a guess (card 0's table range,
 * and container mark slots), so it waits like any incomplete ENI.
 */
function cardLagging(mac: string): EniRead {
  return { mac, status: 'pending', reason: 'network-card absent while this instance reports it for other ENIs (IMDS not yet consistent)' };
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

/** `mac` is canonical (reported); `listed` is IMDS's spelling of it (requested); `had` its last good state.
 * `cardServed`: network-card (or network-card-index) was there. */
async function readEniWith(
  ctx: Context, mac: string, listed: string, primary: boolean, had: EniInfo | undefined,
): Promise<{ result: EniRead; cardServed: boolean }> {
  const base = `${MACS_PATH}${listed}/`;
  // Checked once; the keys are ours. (Per use it was ~750 regex checks a read at 15 × 50: one per address.)
  const fullBase = imdsPath(base);
  const pathOf = (key: EniKey): string => fullBase + key;
  // The keys every ENI has, and the ENI's directory listing (last: a failure among the keys stops it being sent).
  const keys: EniKey[] = [...IDENTITY_KEYS, ...IPV4_KEYS, 'network-card'];
  const bodies = await Promise.all([...keys.map((key) => ctx.get(base + key)), ctx.get(base)]);
  const raw = new Map<EniKey, string | undefined>(keys.map((key, i) => [key, bodies[i]]));
  const directory = bodies[keys.length];
  // No listing (an IMDS or mock without directories, or a MAC no longer listed): every key is asked for, as before.
  const names = directory === undefined ? undefined : new Set(splitList(directory).map((entry) => entry.replace(/\/$/, '')));
  const asked = (key: EniKey): boolean => names === undefined || names.has(key);
  // Older IMDS versions (and the AWS mock) name it network-card-index.
  const cardKey: EniKey = raw.get('network-card') === undefined ? 'network-card-index' : 'network-card';
  const optional = LISTED_ONLY_KEYS.filter((key) => asked(key) || (had !== undefined && HAD[key](had)));
  const more: EniKey[] = [...optional, ...(cardKey === 'network-card-index' && asked(cardKey) ? [cardKey] : [])];
  const moreBodies = await Promise.all(more.map((key) => ctx.get(base + key)));
  more.forEach((key, i) => raw.set(key, moreBodies[i]));
  // Throws (the part is unsettled) where the listing and an optional key of `part` disagree (see LISTED_ONLY_KEYS).
  const agreeing = (part: EniPart): void => {
    if (names === undefined) return;
    const found = optional.filter((key) => PART_OF[key] === part).flatMap((key) => {
      const answered = raw.get(key) !== undefined;
      if (names.has(key) && !answered) return [`${key} is listed but absent (HTTP 404)`];
      if (!names.has(key) && answered) return [`${key} answers but the ENI's listing omits it`];
      return [];
    });
    if (found.length > 0) throw new Disagreement(`${found.join('; ')} (IMDS not yet consistent)`);
  };
  const value = (key: EniKey): string | undefined => raw.get(key);
  const list = (key: EniKey): string[] | undefined => {
    const body = value(key);
    if (body === undefined) return undefined;
    const entries = capped(pathOf(key), splitList(body), ctx.maxList);
    return entries.length === 0 ? undefined : entries;
  };
  const cardBody = value(cardKey);
  const cardServed = cardBody !== undefined;
  const done = (result: EniRead): { result: EniRead; cardServed: boolean } => ({ result, cardServed });

  // 1. Identity. A malformed value makes the ENI invalid (its last good state is kept); an absent one, pending.
  let deviceNumber: number | undefined;
  let networkCard = 0;
  let interfaceId: string | undefined;
  try {
    const deviceBody = value('device-number');
    deviceNumber = deviceBody === undefined ? undefined : parseIndex(pathOf('device-number'), deviceBody);
    // Absent network-card ⇒ 0 here. On single-card instances IMDS may not serve the key at all; an instance that
    // serves it for other ENIs is lagging for this one: readImds and readEni hold such an ENI back (cardLagging).
    networkCard = cardBody === undefined ? 0 : parseIndex(pathOf(cardKey), cardBody);
    const idBody = value('interface-id');
    interfaceId = idBody === undefined ? undefined : parseInterfaceId(pathOf('interface-id'), idBody);
  } catch (err) {
    return done(invalid(mac, err));
  }
  const missing = [...IDENTITY_KEYS, ...IPV4_KEYS].filter((key) => value(key) === undefined);
  if (deviceNumber === undefined || interfaceId === undefined) {
    return done({ mac, status: 'pending', reason: `IMDS key${missing.length > 1 ? 's' : ''} absent: ${missing.join(', ')}` });
  }
  // Right after an attach a non-primary MAC can read device-number 0: card 0 / device 0 is the primary's slot, so
  // that reading is not yet true. (On network cards > 0, device 0 is a legitimate slot and is accepted.)
  if (deviceNumber === 0 && networkCard === 0 && !primary) {
    return done({ mac, status: 'pending', reason: 'device-number reads 0 (IMDS not yet consistent)' });
  }

  // 2. The IPv4 part and the IPv6 part, each settled or not. The IPv6 part is read first: whether an ENI without
  // IPv4 keys is IPv6-only (complete) or incomplete (pending) depends on it.
  const unsettled: Array<{ part: EniPart; reason: string }> = [];
  let v6 = { ipv6s: [] as string[], ipv6Prefixes: [] as string[], subnetIpv6Cidrs: [] as string[] };
  let v6Settled = false;
  try {
    agreeing('ipv6');
    const subnets6 = (list('subnet-ipv6-cidr-blocks') ?? []).map((entry) => parseSubnet(pathOf('subnet-ipv6-cidr-blocks'), entry, 6));
    const within6 = subnets6.length > 0 ? subnets6 : undefined;
    const ipv6s = (list('ipv6s') ?? []).map((entry) => parseAddress(pathOf('ipv6s'), entry, 6, within6));
    const ipv6Prefixes = (list('ipv6-prefix') ?? []).map((entry) => parsePrefix(pathOf('ipv6-prefix'), entry, 6, within6));
    if (within6 === undefined && (ipv6s.length > 0 || ipv6Prefixes.length > 0)) {
      unsettled.push({ part: 'ipv6', reason: 'IPv6 addresses listed but subnet-ipv6-cidr-blocks absent (IMDS not yet consistent)' });
    } else {
      v6 = { ipv6s: unique(ipv6s), ipv6Prefixes: unique(ipv6Prefixes), subnetIpv6Cidrs: unique(subnets6.map(networkOf)) };
      v6Settled = true;
    }
  } catch (err) {
    unsettled.push({ part: 'ipv6', reason: reasonOf(err) });
  }
  const hasIpv6 = v6Settled && v6.ipv6s.length + v6.ipv6Prefixes.length > 0;
  let v4 = { ipv4s: [] as string[], ipv4Prefixes: [] as string[], subnetIpv4Cidr: '' };
  try {
    agreeing('ipv4');
    const subnetBody = value('subnet-ipv4-cidr-block');
    const subnet4 = subnetBody === undefined ? undefined : parseSubnet(pathOf('subnet-ipv4-cidr-block'), subnetBody, 4);
    const within = subnet4 === undefined ? undefined : [subnet4];
    const ipv4s = list('local-ipv4s')?.map((entry) => parseAddress(pathOf('local-ipv4s'), entry, 4, within));
    const ipv4Prefixes = (list('ipv4-prefix') ?? []).map((entry) => parsePrefix(pathOf('ipv4-prefix'), entry, 4, within));
    const absentV4 = IPV4_KEYS.filter((key) => key === 'local-ipv4s' ? ipv4s === undefined : value(key) === undefined);
    if (absentV4.length === IPV4_KEYS.length && ipv4Prefixes.length === 0 && hasIpv6) {
      // IPv6-only (docs/ipv6.md): no IPv4 key at all, and a settled IPv6 part with addresses or prefixes. That the
      // ENI had IPv4 before is src/core/last-good.ts's to tell (then it is held, not taken as IPv6-only).
    } else if (absentV4.length === IPV4_KEYS.length && !hasIpv6) {
      // Neither family usable: say why the IPv6 part is not (an IPv6-only ENI waiting for its subnet says so).
      const v6Reason = unsettled.find((u) => u.part === 'ipv6')?.reason;
      unsettled.push({ part: 'ipv4', reason: `IMDS keys absent: local-ipv4s, subnet-ipv4-cidr-block, and ${v6Reason === undefined ? 'no IPv6 address or prefix' : `IPv6: ${v6Reason}`}` });
    } else if (absentV4.length > 0 || ipv4s === undefined || subnet4 === undefined) {
      unsettled.push({ part: 'ipv4', reason: `IMDS key${absentV4.length > 1 ? 's' : ''} absent: ${absentV4.join(', ')}` });
    } else {
      v4 = { ipv4s: unique(ipv4s), ipv4Prefixes: unique(ipv4Prefixes), subnetIpv4Cidr: networkOf(subnet4) };
    }
  } catch (err) {
    unsettled.push({ part: 'ipv4', reason: reasonOf(err) });
  }
  const eni: EniInfo = { mac, deviceNumber, networkCard, interfaceId, ...v4, ...v6 };
  unsettled.sort((a, b) => compareText(a.part, b.part));
  return done({ mac, status: 'ready', eni, unsettled });
}

function invalid(mac: string, err: unknown): EniRead {
  if (!(err instanceof ImdsValidationError)) throw err;
  return { mac, status: 'invalid', reason: err.message };
}

/** An ENI's listing and one of its optional keys disagree: that key's part is unsettled (readEniWith). */
class Disagreement extends Error {}

/** A malformed value or a disagreement in one part of one ENI is that part's problem only; anything else is the read's. */
function reasonOf(err: unknown): string {
  if (err instanceof ImdsValidationError || err instanceof Disagreement) return err.message;
  throw err;
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
