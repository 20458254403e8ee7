// The daemon's view, published for `ec2netd status` (another process): which ENIs are held on their last good
// IMDS read and why, which writes fail, the fights, and the snapshot itself, so that `status` judges drift
// against what the daemon configures rather than against a fresh, possibly inconsistent, read.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HeldEni, ImdsSnapshot, PendingEni } from '../core/types';

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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
