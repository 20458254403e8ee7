// Address events that the IMDS snapshot does not explain, and what they call for (docs/failover.md). Pure: the
// caller passes the time in, does the reads and the syncs.
//
// A failover script moves a secondary private IP with `assign-private-ip-addresses --allow-reassignment` and then
// adds it on the new owner (`ip address add`) and deletes it on the old one. Those address events are the only
// signal an instance gets, and IMDS follows the move only after a propagation delay. So:
// - an address that appears on an ENI's link and that IMDS does not list, and an address IMDS lists that
//   disappears, make the daemon re-read that ENI's keys at once and then with backoff (firstRetryMs doubling up to
//   maxRetryMs), within windowMs after the event, never two reads of one MAC closer than minGapMs: 9 reads of the
//   ENI's keys over 9.1 s when IMDS never explains the event;
// - the watch on an address ends when IMDS explains it: the appeared address is listed (its `from` rule follows), the
//   vanished one is no longer listed (its rule goes);
// - a vanished address IMDS still lists is held back (not re-added) while its watch runs. It is re-added only if a
//   read that started holdMs or more after the deletion still lists it (or when its window ends with IMDS
//   unreadable): a deletion IMDS never confirms was a mistake, and is repaired. While IMDS keeps listing the address
//   for less than holdMs, it is never put back, so there is no flapping beyond what IMDS says.
// - An ENI's primary private IP cannot move to another ENI: its deletion is repaired at once, as before, and so are
//   the addresses deleted with it (a flush of the link, not a failover).
import { isLinkLocal6, linkForMac } from './desired';
import { addressKey } from './diff';
import { canonicalAddress, cidrContains, parseCidr } from './ip';
import type { Change, EniInfo, ImdsSnapshot, KernelAddress, KernelLink } from './types';

export type AddressChange = 'appeared' | 'vanished';

export interface UnexplainedAddress {
  mac: string;
  address: string;
  change: AddressChange;
}

export interface WatchPolicy {
  firstRetryMs: number;
  maxRetryMs: number;
  windowMs: number;
  holdMs: number;
  minGapMs: number;
}

export const DEFAULT_WATCH_POLICY: WatchPolicy = { firstRetryMs: 100, maxRetryMs: 2000, windowMs: 10_000, holdMs: 5000, minGapMs: 50 };

export interface KernelAddresses {
  links: readonly KernelLink[];
  addresses: readonly KernelAddress[];
}

/** Whether `eni` lists `address` as one of its IPs or inside one of its delegated prefixes. */
export function listedOn(eni: EniInfo, address: string): boolean {
  const a = canonicalAddress(address);
  if ([...eni.ipv4s, ...eni.ipv6s].some((ip) => canonicalAddress(ip) === a)) return true;
  return [...eni.ipv4Prefixes, ...eni.ipv6Prefixes].some((p) => {
    const c = parseCidr(p);
    return c !== undefined && cidrContains(c, a);
  });
}

function listedIn(snapshot: ImdsSnapshot, mac: string, address: string): boolean {
  const eni = snapshot.enis.find((e) => e.mac === mac);
  return eni !== undefined && listedOn(eni, address);
}

/**
 * An observation as ec2netd's own writes left it: the addresses it added (or found there: EEXIST) present, the
 * ones it deleted gone, the links it set up up. The kernel no longer sends the daemon the notifications of its own
 * writes (src/kernel/event-filter.ts), so no sync observes the state right after them; compared with the state
 * before them, an address ec2netd added and another process deleted at once would look unchanged (never watched,
 * put back at once), and one on a link ec2netd just set up would be skipped as "on a link that was down".
 * `inPlace`: the changes the kernel took. Deletions are not needed for correctness (their own notification still
 * arrives, and its sync observes) but are applied too, so that the result is what the kernel holds.
 */
export function afterWrites(state: KernelAddresses, inPlace: readonly Change[]): KernelAddresses {
  // Writes of rules and routes alone leave the state as it was: the very same arrays, so that an observation that
  // did not re-read the addresses compares as unchanged at once (unexplainedChanges).
  if (!inPlace.some((c) => c.op === 'link-up' || c.op === 'add-address' || c.op === 'del-address')) return state;
  let links = state.links;
  // One key per address (the diff's, with the prefix length): a full sync writes ~750 at 15 × 50, so no scan of
  // the whole list per change.
  const key = (a: Pick<KernelAddress, 'ifindex' | 'address' | 'prefixLen'>): string => `${addressKey(a)}/${a.prefixLen}`;
  const byKey = new Map(state.addresses.map((a) => [key(a), a]));
  for (const c of inPlace) {
    if (c.op === 'link-up') {
      links = links.map((l) => (l.index === c.link.index && !l.up ? { ...l, up: true } : l));
    } else if (c.op === 'add-address') {
      const k = key(c.address);
      if (byKey.has(k)) continue;
      const { ifindex, family, address, prefixLen, noPrefixRoute } = c.address;
      byKey.set(k, { ifindex, family, address, prefixLen, noPrefixRoute });
    } else if (c.op === 'del-address') {
      byKey.delete(key(c.address));
    }
  }
  return { links, addresses: [...byKey.values()] };
}

/**
 * Address changes between two kernel observations, on the links of ENIs the snapshot describes, that the snapshot
 * does not explain: appeared but not listed, vanished but listed (and not the ENI's primary IP). Links that came,
 * went, changed index or are down are left out (their addresses change for other reasons: IPv6 goes on link down).
 */
export function unexplainedChanges(before: KernelAddresses, after: KernelAddresses, snapshot: ImdsSnapshot): UnexplainedAddress[] {
  // The same dump (the addresses were not re-read: a hot attach's sync reads the links alone): every link's
  // addresses are what they were, whatever the links did.
  if (before.addresses === after.addresses) return [];
  const out: UnexplainedAddress[] = [];
  const watched: Array<{ eni: EniInfo; index: number }> = [];
  for (const eni of snapshot.enis) {
    const was = linkForMac([...before.links], eni.mac);
    const is = linkForMac([...after.links], eni.mac);
    if (was === undefined || is === undefined || was.index !== is.index || !was.up || !is.up) continue;
    watched.push({ eni, index: is.index });
  }
  // Each state's addresses grouped by link in one pass (per ENI, a scan of every address was 15 × 2 × 750 at 15 × 50,
  // on every sync's path).
  const indexes = new Set(watched.map((w) => w.index));
  const byLink = (state: KernelAddresses): Map<number, Set<string>> => {
    const m = new Map<number, Set<string>>();
    for (const a of state.addresses) {
      if (!indexes.has(a.ifindex) || isLinkLocal6(a.address)) continue;
      let set = m.get(a.ifindex);
      if (set === undefined) m.set(a.ifindex, set = new Set());
      set.add(canonicalAddress(a.address));
    }
    return m;
  };
  const oldByLink = byLink(before);
  const nowByLink = byLink(after);
  for (const { eni, index } of watched) {
    const old = oldByLink.get(index) ?? new Set<string>();
    const now = nowByLink.get(index) ?? new Set<string>();
    const primaryIp = eni.ipv4s[0] === undefined ? undefined : canonicalAddress(eni.ipv4s[0]);
    for (const a of now) if (!old.has(a) && !listedOn(eni, a)) out.push({ mac: eni.mac, address: a, change: 'appeared' });
    // The primary IP gone with them: the link was flushed, not an IP moved away (repaired at once, as before).
    const flushed = primaryIp !== undefined && old.has(primaryIp) && !now.has(primaryIp);
    if (flushed) continue;
    for (const a of old) if (!now.has(a) && a !== primaryIp && listedOn(eni, a)) out.push({ mac: eni.mac, address: a, change: 'vanished' });
  }
  return out;
}

interface Watched {
  change: AddressChange;
  since: number;
}

interface MacWatch {
  items: Map<string, Watched>;
  retryMs: number;
  lastReadAt: number | undefined;
  nextReadAt: number;
}

/** What a finished read changed: `released` addresses are held back no longer (a sync re-adds them). */
export interface ReadOutcome {
  resolved: string[];
  released: string[];
  expired: string[];
}

/** The watches, per MAC. */
export class AddressWatch {
  private readonly watches = new Map<string, MacWatch>();

  constructor(private readonly policy: WatchPolicy = DEFAULT_WATCH_POLICY) {}

  /**
   * Takes one kernel observation: starts watches for the unexplained changes since the previous one, and drops
   * watched addresses that undid themselves (an appeared one gone again, a vanished one back). Returns the changes.
   */
  observe(before: KernelAddresses, after: KernelAddresses, snapshot: ImdsSnapshot, now: number): UnexplainedAddress[] {
    for (const [mac, w] of this.watches) {
      const link = linkForMac([...after.links], mac);
      const present = new Set(after.addresses.filter((a) => a.ifindex === link?.index).map((a) => canonicalAddress(a.address)));
      for (const [address, item] of w.items) {
        if ((item.change === 'appeared') !== present.has(address)) w.items.delete(address);
      }
      if (w.items.size === 0) this.watches.delete(mac);
    }
    const changes = unexplainedChanges(before, after, snapshot);
    for (const c of changes) this.start(c, now);
    return changes;
  }

  private start(c: UnexplainedAddress, now: number): void {
    let w = this.watches.get(c.mac);
    if (w === undefined) {
      w = { items: new Map(), retryMs: this.policy.firstRetryMs, lastReadAt: undefined, nextReadAt: now };
      this.watches.set(c.mac, w);
    }
    w.items.set(c.address, { change: c.change, since: now });
    // A new event is a new propagation to wait for: read at once (rate-limited), then back off afresh.
    w.retryMs = this.policy.firstRetryMs;
    w.nextReadAt = Math.max(now, (w.lastReadAt ?? -Infinity) + this.policy.minGapMs);
  }

  /** MACs with a watch, and when each wants its next read. */
  due(): Array<{ mac: string; at: number }> {
    return [...this.watches].map(([mac, w]) => ({ mac, at: w.nextReadAt }));
  }

  /** A read of `mac` starts now: the next one is not before now + minGapMs. */
  readStarted(mac: string, now: number): void {
    const w = this.watches.get(mac);
    if (w === undefined) return;
    w.lastReadAt = now;
    w.nextReadAt = Math.max(w.nextReadAt, now + this.policy.minGapMs);
  }

  /**
   * A read of `mac` that started at `startedAt` finished (`snapshot`: the state after it; undefined when it failed).
   * Ends the watches it explains or whose bound passed, and schedules the next read.
   */
  readDone(mac: string, startedAt: number, snapshot: ImdsSnapshot | undefined, now: number): ReadOutcome {
    const out: ReadOutcome = { resolved: [], released: [], expired: [] };
    const w = this.watches.get(mac);
    if (w === undefined) return out;
    // A watch whose next read would fall after its window ends now rather than reading once more.
    const nextBackoff = now + w.retryMs;
    for (const [address, item] of w.items) {
      const listed = snapshot === undefined ? undefined : listedIn(snapshot, mac, address);
      if (listed !== undefined && listed === (item.change === 'appeared')) {
        out.resolved.push(address);
      } else if (item.change === 'vanished' && listed === true && startedAt >= item.since + this.policy.holdMs) {
        out.released.push(address);
      } else if (nextBackoff > item.since + this.policy.windowMs) {
        (item.change === 'vanished' ? out.released : out.expired).push(address);
      } else {
        continue;
      }
      w.items.delete(address);
    }
    if (w.items.size === 0) {
      this.watches.delete(mac);
      return out;
    }
    // The next read: after the backoff, but no later than a hold's end, so that release is decided on a fresh read.
    let next = nextBackoff;
    for (const item of w.items.values()) {
      const holdEnd = item.since + this.policy.holdMs;
      if (item.change === 'vanished' && holdEnd > startedAt) next = Math.min(next, holdEnd);
    }
    w.retryMs = Math.min(w.retryMs * 2, this.policy.maxRetryMs);
    w.nextReadAt = Math.max(next, startedAt + this.policy.minGapMs);
    return out;
  }

  /** A vanished address that IMDS still lists and whose watch runs: not to be re-added yet. */
  heldBack(mac: string, address: string): boolean {
    return this.watches.get(mac)?.items.get(canonicalAddress(address))?.change === 'vanished';
  }

  /** Every watched address, for the status and the journal. */
  watched(): Array<UnexplainedAddress & { since: number }> {
    return [...this.watches].flatMap(([mac, w]) => [...w.items].map(([address, i]) => ({ mac, address, change: i.change, since: i.since })));
  }
}
