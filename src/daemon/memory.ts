// Gives memory back after a burst of work. V8 keeps the heap it grew to during a large sync or an event storm
// (15 × 50: 20–22 MB committed for 10–13 MB live) until its memory reducer decides to shrink it, which in our runs
// often did not happen within 10 s, and a daemon idle for hours afterwards should not hold that peak. Once work
// has been quiet for `quietMs` after a burst (weight ≥ `burst`: one sync counts 1 plus a quarter of its changes,
// so a large sync or a storm of syncs, not a fight's few repairs), one full GC that reduces the footprint runs:
// V8's "last resort" collection, which releases free pages ('regular' major GCs measured here released nothing).
// It takes 50–190 ms of CPU at 15 × 50 and gave back 6–14 MB; at most one every `minIntervalMs` (10 s).
// Needs node's --expose-gc (bin/ec2netd and the unit pass it); without it this does nothing.

export type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** What one reclaim did: its duration, and the resident memory before and after (MB). */
export type ReclaimReport = (ms: number, rssBeforeMb: number, rssAfterMb: number) => void;

export interface ReclaimOptions {
  quietMs?: number;
  burst?: number;
  minIntervalMs?: number;
  /** The collector (default: globalThis.gc, present with --expose-gc). */
  gc?: unknown;
  now?: () => number;
}

export class MemoryReclaimer {
  private weight = 0;
  private timer: NodeJS.Timeout | undefined;
  private last = -Infinity;
  private readonly gc: Gc | undefined;
  private readonly quietMs: number;
  private readonly burst: number;
  private readonly minIntervalMs: number;
  private readonly now: () => number;

  constructor(private readonly report: ReclaimReport = () => undefined, options: ReclaimOptions = {}) {
    const gc = 'gc' in options ? options.gc : (globalThis as { gc?: unknown }).gc;
    this.gc = typeof gc === 'function' ? (gc as Gc) : undefined;
    this.quietMs = options.quietMs ?? 1000;
    this.burst = options.burst ?? 32;
    this.minIntervalMs = options.minIntervalMs ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** A sync ran that planned `changes` changes; every sync postpones the reclaim until work is quiet. */
  noteSync(changes: number): void {
    if (this.gc === undefined) return;
    this.weight += 1 + changes / 4;
    if (this.weight < this.burst) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    const wait = Math.max(this.quietMs, this.last + this.minIntervalMs - this.now());
    this.timer = setTimeout(() => this.reclaim(), wait);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private reclaim(): void {
    this.timer = undefined;
    this.weight = 0;
    this.last = this.now();
    if (this.gc === undefined) return;
    const mb = (): number => Math.round(process.memoryUsage.rss() / 104857.6) / 10;
    const before = mb();
    const started = performance.now();
    this.gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    this.report(Math.round((performance.now() - started) * 10) / 10, before, mb());
  }
}
