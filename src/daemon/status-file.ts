// The daemon's view, published for `ec2netd status` (another process): which ENIs are held on their last good
// IMDS read and why, which writes fail, the fights, and the snapshot itself, so that `status` judges drift
// against what the daemon configures rather than against a fresh, possibly inconsistent, read.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { familyOf, normalizeCidr, normalizeMac } from '../core/ip';
import type { EniInfo, HeldEni, ImdsSnapshot, PendingEni } from '../core/types';

export interface DaemonStatus {
  pid: number;
  at: string;
  imdsError: string | null;
  snapshot: ImdsSnapshot | null;
  held: HeldEni[];
  waiting: PendingEni[];
  failing: Array<{ change: string; error: string }>;
  fights: string[];
  notes: string[];
  /** Addresses whose events IMDS does not explain yet, being re-read (src/daemon/address-watch.ts). */
  watching: string[];
}

export const STATUS_FILE = 'status.json';

/** Atomic (temp file + rename): a reader never sees half a file. Errors are the caller's to log. */
export function writeStatus(dir: string, status: DaemonStatus): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, STATUS_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(status)}\n`, { mode: 0o644 });
  renameSync(tmp, file);
}

/** The running daemon's status, or undefined when there is none (no file, or its process is gone). */
export function readStatus(dir: string): DaemonStatus | undefined {
  try {
    const doc = JSON.parse(readFileSync(join(dir, STATUS_FILE), 'utf8')) as Partial<DaemonStatus>;
    if (typeof doc.pid !== 'number' || !alive(doc.pid)) return undefined;
    return {
      pid: doc.pid, at: String(doc.at ?? ''), imdsError: doc.imdsError ?? null, snapshot: doc.snapshot ?? null,
      held: doc.held ?? [], waiting: doc.waiting ?? [], failing: doc.failing ?? [], fights: doc.fights ?? [], notes: doc.notes ?? [],
      watching: doc.watching ?? [],
    };
  } catch {
    return undefined;
  }
}

/**
 * The IMDS state the previous daemon in this namespace configured (its status file survives it in stateDir, a
 * tmpfs like the routing it made). A restarted daemon merges its first reads into it, so an ENI that IMDS
 * reads incompletely just then keeps the routing it has instead of losing it. Returns a problem text for a file
 * that is not a well-formed snapshot (the safe direction: start without one).
 */
export function readPreviousSnapshot(dir: string): { snapshot?: ImdsSnapshot; problem?: string } {
  const file = join(dir, STATUS_FILE);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    return { problem: `cannot read ${file}: ${(err as Error).message}; starting without the previous IMDS state` };
  }
  const snapshot = (doc as { snapshot?: unknown } | null)?.snapshot;
  if (snapshot === null || snapshot === undefined) return {};
  return isSnapshot(snapshot) ? { snapshot: { primaryMac: snapshot.primaryMac, enis: snapshot.enis, pending: [] } }
    : { problem: `${file} holds no well-formed IMDS snapshot; starting without the previous IMDS state` };
}

const isStrings = (x: unknown, ok: (s: string) => boolean): x is string[] => Array.isArray(x) && x.every((s) => typeof s === 'string' && ok(s));
const isAddress = (s: string): boolean => familyOf(s) !== undefined;
const isCidr = (s: string): boolean => normalizeCidr(s) !== undefined;
const isIndex = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 0 && (n as number) < 1000;

function isEni(x: unknown): x is EniInfo {
  const e = x as Partial<Record<keyof EniInfo, unknown>>;
  return typeof e === 'object' && e !== null && typeof e.mac === 'string' && normalizeMac(e.mac) === e.mac
    && isIndex(e.deviceNumber) && isIndex(e.networkCard) && typeof e.interfaceId === 'string' && /^eni-[0-9a-f]+$/.test(e.interfaceId)
    && isStrings(e.ipv4s, isAddress) && isStrings(e.ipv4Prefixes, isCidr) && isStrings(e.ipv6s, isAddress)
    && isStrings(e.ipv6Prefixes, isCidr) && typeof e.subnetIpv4Cidr === 'string' && (e.subnetIpv4Cidr === '' || isCidr(e.subnetIpv4Cidr))
    && isStrings(e.subnetIpv6Cidrs, isCidr);
}

function isSnapshot(x: unknown): x is ImdsSnapshot {
  const s = x as Partial<Record<keyof ImdsSnapshot, unknown>>;
  return typeof s === 'object' && s !== null && typeof s.primaryMac === 'string' && normalizeMac(s.primaryMac) === s.primaryMac
    && Array.isArray(s.enis) && s.enis.every(isEni);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
