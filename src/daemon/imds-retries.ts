// When to read IMDS again for what it does not describe yet: links it does not list (a hot attach seen before IMDS
// lists it), ENIs it lists incompletely or inconsistently, and, before its first answer, the whole instance. Each has
// its own backoff (pendingRetryBaseMs doubling up to pendingRetryMaxMs): one ENI IMDS keeps answering badly for must
// not stretch the wait of another that has just appeared. Pure: the daemon owns the timer and the clock.

/** The whole instance (no IMDS snapshot yet), beside the MACs. */
export const WHOLE = '';

/** A link IMDS never lists (not an ENI after all) is given up after this many reads; the periodic refresh still looks. */
export const MAX_UNKNOWN_TRIES = 12;

export interface Waiting {
  /** Links that look like ENIs but that IMDS does not describe. */
  unknown: readonly string[];
  /** ENIs IMDS lists but describes incompletely (or held on their last good read). */
  incomplete: readonly string[];
  /** No IMDS snapshot yet: the whole instance is read again. */
  whole: boolean;
}

interface Entry {
  tries: number;
  dueAt: number;
  unknown: boolean;
}

export class ImdsRetries {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly baseMs: number, private readonly maxMs: number) {}

  /** Whether a read of this key was ever started (since it last stopped waiting). */
  tried(key: string): boolean {
    return (this.entries.get(key)?.tries ?? 0) > 0;
  }

  /** Reads of these keys start now: each next one is due a backoff step later. */
  started(keys: readonly string[], now: number): void {
    for (const key of keys) {
      const entry = this.entries.get(key) ?? { tries: 0, dueAt: now, unknown: false };
      entry.tries += 1;
      entry.dueAt = now + Math.min(this.baseMs * 2 ** (entry.tries - 1), this.maxMs);
      this.entries.set(key, entry);
    }
  }

  /**
   * What waits now (after a sync). A link not tried yet is due at once; an ENI found incomplete by a read that was
   * not its own (a refresh) waits one base step. Keys that stopped waiting are forgotten: their next wait starts over.
   */
  update(waiting: Waiting, now: number): void {
    const keys = new Map<string, boolean>([
      ...waiting.incomplete.map((m): [string, boolean] => [m, false]),
      ...waiting.unknown.map((m): [string, boolean] => [m, true]),
      ...(waiting.whole ? [[WHOLE, false] as [string, boolean]] : []),
    ]);
    for (const key of this.entries.keys()) if (!keys.has(key)) this.entries.delete(key);
    for (const [key, unknown] of keys) {
      const entry = this.entries.get(key);
      if (entry === undefined) this.entries.set(key, { tries: 0, dueAt: unknown ? now : now + this.baseMs, unknown });
      else entry.unknown = unknown;
    }
  }

  private active(): Array<[string, Entry]> {
    return [...this.entries].filter(([, e]) => !e.unknown || e.tries < MAX_UNKNOWN_TRIES);
  }

  /** Whether anything is still retried. */
  get waiting(): boolean {
    return this.active().length > 0;
  }

  /** When the next read is due (undefined: nothing to retry). */
  nextAt(): number | undefined {
    const due = this.active().map(([, e]) => e.dueAt);
    return due.length === 0 ? undefined : Math.min(...due);
  }

  /**
   * The keys due by `now` (WHOLE among them: read everything), with those due within the next base step: keys that
   * started waiting at about the same time (a storm of links, tried a few ms apart) stay in one read.
   */
  due(now: number): string[] {
    if (!this.active().some(([, e]) => e.dueAt <= now)) return [];
    return this.active().filter(([, e]) => e.dueAt <= now + this.baseMs).map(([key]) => key);
  }
}
