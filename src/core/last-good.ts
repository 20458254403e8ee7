// Last good state per ENI and per part: how one IMDS read is folded into what ec2netd configures. Pure.
//
// IMDS is eventually consistent (docs/ec2-networking.md §3): for a while after an attach, a modify or an IP move,
// one ENI can read incomplete (a key 404s), inconsistent (IPv6 addresses before their subnet, two ENIs in one
// slot, network-card lagging) or malformed. None of that is a statement that routing should go: an ENI that reads
// so keeps what its last consistent read said (the whole ENI, or only the part that is unsettled: its IPv4 keys or
// its IPv6 keys), and every other ENI goes on. Only a consistent read changes an ENI, and only a link
// disappearing removes one (on EC2 a detach removes the link).
import { isDeepStrictEqual } from 'node:util';
import { compareText } from './compare';
import { linkForMac } from './desired';
import type { EniInfo, HeldEni, ImdsSnapshot, KernelLink, PendingEni } from './types';

export type EniPart = 'ipv4' | 'ipv6';

/** What one read of one listed MAC gave. */
export type EniRead =
  /** Identity complete. `unsettled` parts have empty fields in `eni` and must not be taken from this read. */
  | { mac: string; status: 'ready'; eni: EniInfo; unsettled: Array<{ part: EniPart; reason: string }> }
  /** Identity incomplete or not yet plausible (device-number 0, network-card lagging, keys 404). */
  | { mac: string; status: 'pending'; reason: string }
  /** A malformed identity value (the reason names the path and the value). */
  | { mac: string; status: 'invalid'; reason: string };

/** One read of IMDS: the listing (whole, or `macs` only for a targeted re-read) and each MAC read. */
export interface ImdsRead {
  primaryMac: string;
  /** The MACs IMDS listed. For a targeted read, the MACs that were read (other ENIs keep their state). */
  macs: string[];
  enis: EniRead[];
  /** A targeted read of some MACs: ENIs not in `macs` are carried over as they were. */
  partial?: boolean;
}

/** `eni` with one part's fields taken from `from`. */
function withPartOf(eni: EniInfo, part: EniPart, from: EniInfo): EniInfo {
  return part === 'ipv4'
    ? { ...eni, ipv4s: from.ipv4s, ipv4Prefixes: from.ipv4Prefixes, subnetIpv4Cidr: from.subnetIpv4Cidr }
    : { ...eni, ipv6s: from.ipv6s, ipv6Prefixes: from.ipv6Prefixes, subnetIpv6Cidrs: from.subnetIpv6Cidrs };
}

function hasPart(eni: EniInfo, part: EniPart): boolean {
  return part === 'ipv4' ? eni.ipv4s.length > 0 : eni.ipv6s.length + eni.ipv6Prefixes.length > 0;
}

/**
 * Folds `read` into `previous`. `links` are the links of the last kernel observation: an ENI IMDS stops listing
 * is kept while its link is there.
 */
export function mergeRead(previous: ImdsSnapshot | undefined, read: ImdsRead, links: readonly KernelLink[]): ImdsSnapshot {
  const before = new Map((previous?.enis ?? []).map((e) => [e.mac, e]));
  const enis: EniInfo[] = [];
  const pending: PendingEni[] = [];
  const held: HeldEni[] = [];
  const hold = (eni: EniInfo, part: HeldEni['part'], reason: string): void => {
    held.push({ mac: eni.mac, interfaceId: eni.interfaceId, part, reason });
  };

  for (const r of read.enis) {
    const last = before.get(r.mac);
    if (r.status !== 'ready') {
      if (last === undefined) pending.push({ mac: r.mac, reason: r.reason });
      else { enis.push(last); hold(last, 'all', r.reason); }
      continue;
    }
    let eni = r.eni;
    let usable = true;
    for (const { part, reason } of r.unsettled) {
      if (last !== undefined && (hasPart(last, part) || part === 'ipv6')) {
        eni = withPartOf(eni, part, last);
        if (hasPart(last, part)) hold(eni, part, reason);
        else held.push({ mac: eni.mac, interfaceId: eni.interfaceId, part, reason, waiting: true });
      } else if (part === 'ipv6') {
        // Nothing configured for IPv6 yet: the IPv4 part goes ahead, IPv6 waits for a consistent read.
        held.push({ mac: eni.mac, interfaceId: eni.interfaceId, part, reason, waiting: true });
      } else {
        usable = false;
        if (last === undefined) pending.push({ mac: r.mac, reason });
        else { enis.push(last); hold(last, 'all', reason); }
        break;
      }
    }
    // An ENI cannot lose its primary private IPv4: a read without IPv4 after one with it is not yet consistent, and
    // is held, never taken as an IPv6-only ENI. Only an ENI never read with IPv4 is IPv6-only (docs/ipv6.md).
    if (usable && last !== undefined && !r.unsettled.some((u) => u.part === 'ipv4') && eni.ipv4s.length === 0 && last.ipv4s.length > 0) {
      eni = withPartOf(eni, 'ipv4', last);
      hold(eni, 'ipv4', 'no IPv4 keys, but the ENI had a primary private IPv4 (IMDS not yet consistent)');
    }
    // A read that changed nothing keeps the ENI's object: what is built from it is kept with it (src/core/desired.ts).
    if (usable) enis.push(last !== undefined && isDeepStrictEqual(eni, last) ? last : eni);
  }

  const read_ = new Set(read.macs);
  for (const last of previous?.enis ?? []) {
    if (read_.has(last.mac)) continue;
    if (read.partial === true) {
      enis.push(last);
      held.push(...(previous?.held ?? []).filter((h) => h.mac === last.mac));
    } else if (linkForMac([...links], last.mac) !== undefined) {
      enis.push(last);
      held.push({ mac: last.mac, interfaceId: last.interfaceId, part: 'all', reason: 'IMDS no longer lists it but its link is still here (a detach removes the link)', unlisted: true });
    }
  }
  if (read.partial === true) pending.push(...(previous?.pending ?? []).filter((p) => !read_.has(p.mac)));

  return finish(read.primaryMac, enis, pending, held, before);
}

function finish(
  primaryMac: string, enis: EniInfo[], pending: PendingEni[], held: HeldEni[], before: Map<string, EniInfo>,
): ImdsSnapshot {
  const resolved = resolveSlots(enis, pending, held, primaryMac, before);
  return {
    primaryMac,
    enis: resolved.enis.sort((a, b) => a.networkCard - b.networkCard || a.deviceNumber - b.deviceNumber || compareText(a.mac, b.mac)),
    pending: resolved.pending.sort((a, b) => compareText(a.mac, b.mac)),
    held: resolved.held.sort((a, b) => compareText(a.mac, b.mac) || compareText(a.part, b.part)),
  };
}

/**
 * Two ENIs on one (network-card, device-number) would share a routing table: IMDS is mid-change (a detached ENI
 * lingering, a device-number not yet right). The ENI that held the slot before keeps it (else the primary); the
 * others keep their own last good state if they have one elsewhere, or wait.
 */
function resolveSlots(
  enis: EniInfo[], pending: PendingEni[], held: HeldEni[], primaryMac: string, before: Map<string, EniInfo>,
): { enis: EniInfo[]; pending: PendingEni[]; held: HeldEni[] } {
  const slot = (e: EniInfo): string => `${e.networkCard}/${e.deviceNumber}`;
  const bySlot = new Map<string, EniInfo[]>();
  for (const eni of enis) bySlot.set(slot(eni), [...(bySlot.get(slot(eni)) ?? []), eni]);
  const out: EniInfo[] = [];
  const taken = new Set<string>();
  for (const [key, group] of bySlot) {
    if (group.length === 1) { out.push(...group); taken.add(key); continue; }
    const keeper = group.find((e) => before.get(e.mac) !== undefined && slot(before.get(e.mac) as EniInfo) === key)
      ?? group.find((e) => e.mac === primaryMac);
    if (keeper !== undefined) { out.push(keeper); taken.add(key); }
    for (const eni of group) {
      if (eni === keeper) continue;
      const others = group.filter((o) => o !== eni).map((o) => o.mac).join(', ');
      const reason = `network-card ${eni.networkCard} device-number ${eni.deviceNumber} is also claimed by ${others} (IMDS not yet consistent)`;
      const last = before.get(eni.mac);
      if (last !== undefined && slot(last) !== key && !bySlot.has(slot(last))) {
        out.push(last);
        held.push({ mac: last.mac, interfaceId: last.interfaceId, part: 'all', reason });
      } else {
        pending.push({ mac: eni.mac, reason });
      }
    }
  }
  return { enis: out, pending, held };
}
