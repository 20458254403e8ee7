// Gives memory back after a burst of work. V8 keeps the heap it grew to during a large sync or an event storm
// (15 × 50: 20–22 MB committed for 10–13 MB live) until its memory reducer decides to shrink it, which in our runs
// often did not happen within 10 s, and a daemon idle for hours afterwards should not hold that peak. Once work
// has been quiet for `quietMs` after a burst (weight ≥ `burst`: one sync counts 1 plus a quarter of its changes,
// so a large sync or a storm of syncs, not a fight's few repairs), one full GC that reduces the footprint runs:
// V8's "last resort" collection, which releases free pages ('regular' major GCs measured here released nothing).
// It takes 50–190 ms of CPU at 15 × 50 and gave back 6–14 MB; at most one every `minIntervalMs` (10 s).
// Then malloc_trim: what the burst took outside V8's heap (a Buffer per netlink message, node's own allocations)
// is freed into glibc's brk heap, which free() only shrinks from its top; after the storms 4 MB of a 12 MB heap
// were in use, and malloc_trim(0) gave the other 8 back (measured with gdb on the bench's daemon); once right after
// the collection, and again LATE_TRIM_MS later, when V8 has freed the collected Buffers' memory.
// Smaller work (an IMDS refresh's sync, a repair) also leaves its garbage in the old generation, ~3–4 MB at
// 15 × 50 that V8 keeps until its next major GC: once work has been quiet for `idleMs` (10 s) after any sync, the
// same reclaim runs if resident memory or the heap in use grew by `growthMb` (2 MB) since the last one (an idle
// daemon's periodic refresh, every 60 s, grows it 2-3 MB, which with 30 s it held for half of every minute; a
// fight's repairs grow it by less: skipped).
// A sync after which the footprint is 16 MB above the last reclaim's counts as a burst whatever its weight, and so
// does one within `minIntervalMs` of a burst's reclaim: that reclaim ran in a lull of the storm, and the storm's
// tail (a few syncs, little growth in pages the heap had committed already) would otherwise wait for the idle
// reclaim (one bench run ended the storms at 61.4 MB with 6.8 MB of garbage in the heap).
// Needs node's --expose-gc (bin/ec2netd and the unit pass it); without it this does nothing.

/** How long after its collection a reclaim trims malloc's heap again (a task of V8's frees the Buffers in between; a delay of 0 sufficed in the two storms tried). */
export const LATE_TRIM_MS = 100;

export type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** What one reclaim did: its duration, and the resident memory before and after (MB). */
export type ReclaimReport = (ms: number, rssBeforeMb: number, rssAfterMb: number, trimmed: boolean) => void;

export interface ReclaimOptions {
  quietMs?: number;
  /** Quiet after smaller work (weight under `burst`) before a reclaim, which runs only if resident memory or the heap in use grew by `growthMb` since the last one. */
  idleMs?: number;
  growthMb?: number;
  /** Resident growth since the last reclaim that makes any work a burst (reclaimed after quietMs). */
  burstGrowthMb?: number;
  /** A reclaim that fell due found nothing grown and did not collect (resident and heap MB): logged, so that a reader knows none is pending. */
  skipped?: (rssMb: number, heapUsedMb: number) => void;
  /** Resident bytes (default: process.memoryUsage.rss). */
  rss?: () => number;
  /** V8 heap bytes in use, garbage included (default: process.memoryUsage().heapUsed). */
  heapUsed?: () => number;
  burst?: number;
  minIntervalMs?: number;
  /** The collector (default: globalThis.gc, present with --expose-gc). */
  gc?: unknown;
  /** Gives free malloc memory back to the system; true when some was (default: none; the daemon passes glibc's). */
  trim?: () => boolean;
  now?: () => number;
}

export class MemoryReclaimer {
  private weight = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The second malloc_trim of the last reclaim, pending (LATE_TRIM_MS after its collection). */
  private lateTrim: NodeJS.Timeout | undefined;
  private last = -Infinity;
  /** Whether the last reclaim followed a storm (weight or growth), not only a storm's tail. */
  private lastWasBurst = false;
  private readonly gc: Gc | undefined;
  private readonly quietMs: number;
  private readonly idleMs: number;
  private readonly growthMb: number;
  private readonly burstGrowthMb: number;
  private readonly rss: () => number;
  private readonly heapUsed: () => number;
  /** Resident MB after the last reclaim (none yet: when this reclaimer was made, at start). */
  private lastAfterMb: number;
  /** Heap MB in use after the last reclaim (or at start). */
  private lastHeapMb: number;
  private readonly burst: number;
  private readonly minIntervalMs: number;
  private readonly now: () => number;
  private readonly trim: () => boolean;
  private readonly skipped: (rssMb: number, heapUsedMb: number) => void;

  constructor(private readonly report: ReclaimReport = () => undefined, options: ReclaimOptions = {}) {
    const gc = 'gc' in options ? options.gc : (globalThis as { gc?: unknown }).gc;
    this.gc = typeof gc === 'function' ? (gc as Gc) : undefined;
    this.quietMs = options.quietMs ?? 1000;
    this.idleMs = options.idleMs ?? 10_000;
    this.growthMb = options.growthMb ?? 2;
    this.burstGrowthMb = options.burstGrowthMb ?? 16;
    this.rss = options.rss ?? (() => process.memoryUsage.rss());
    this.lastAfterMb = this.rss() / 1048576;
    this.heapUsed = options.heapUsed ?? (() => process.memoryUsage().heapUsed);
    this.lastHeapMb = this.heapUsed() / 1048576;
    this.burst = options.burst ?? 32;
    this.minIntervalMs = options.minIntervalMs ?? 10_000;
    this.now = options.now ?? Date.now;
    this.trim = options.trim ?? (() => false);
    this.skipped = options.skipped ?? (() => undefined);
  }

  /** A sync ran that planned `changes` changes; every sync postpones the reclaim until work is quiet. */
  noteSync(changes: number): void {
    if (this.gc === undefined) return;
    this.weight += 1 + changes / 4;
    // Or grown by burstGrowthMb since the last reclaim: the end of a storm whose first part a reclaim already
    // followed (in a lull) weighs little by count, and can still hold tens of MB (a link storm's dumps, 50 MB).
    const storm = this.weight >= this.burst || this.rss() / 1048576 >= this.lastAfterMb + this.burstGrowthMb;
    // A storm's tail continues it once: the reclaim after the tail does not make the next syncs a tail (a fight's
    // repairs after a storm would be collected every minIntervalMs for as long as the fight goes on).
    const burst = storm || (this.lastWasBurst && this.now() - this.last < this.minIntervalMs);
    if (this.timer !== undefined) clearTimeout(this.timer);
    const wait = Math.max(burst ? this.quietMs : this.idleMs, this.last + this.minIntervalMs - this.now());
    this.timer = setTimeout(() => this.reclaim(burst, storm), wait);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.lateTrim !== undefined) clearTimeout(this.lateTrim);
    this.timer = undefined;
    this.lateTrim = undefined;
  }

  private reclaim(burst: boolean, storm: boolean): void {
    this.timer = undefined;
    this.weight = 0;
    if (this.gc === undefined) return;
    const mb = (): number => Math.round(this.rss() / 104857.6) / 10;
    const before = mb();
    // After smaller work, only when it grew the footprint, or left that much garbage in a heap whose pages were
    // committed already (after a storm whose reclaim ran in a lull, RSS does not grow: the old generation held 6-7 MB
    // of garbage for good, 61.4 MB resident in a bench run). A pause of tens of ms for nothing otherwise.
    if (!burst) {
      const heapMb = this.heapUsed() / 1048576;
      if (before < this.lastAfterMb + this.growthMb && heapMb < this.lastHeapMb + this.growthMb) {
        this.skipped(before, Math.round(heapMb * 10) / 10);
        return;
      }
    }
    this.last = this.now();
    this.lastWasBurst = storm;
    const started = performance.now();
    this.gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    let trimmed = this.tryTrim();
    const pauseMs = performance.now() - started;
    this.lastAfterMb = mb();
    this.lastHeapMb = this.heapUsed() / 1048576;
    // V8 frees the collected Buffers' malloc memory in a task after the collection (its ArrayBuffer sweeper), not
    // during it: a second trim once that task ran gave back 1-2 MB more after a storm (59.2 -> 57.2 MB), in under
    // a ms. The reclaim is reported then, with what it left.
    this.lateTrim = setTimeout(() => {
      this.lateTrim = undefined;
      const again = performance.now();
      trimmed = this.tryTrim() || trimmed;
      this.lastAfterMb = mb();
      this.report(Math.round((pauseMs + performance.now() - again) * 10) / 10, before, this.lastAfterMb, trimmed);
    }, LATE_TRIM_MS);
    this.lateTrim.unref();
  }

  /** malloc_trim; an addon without the patch's mallocTrim (a packaging mistake) must not take the daemon down: false. */
  private tryTrim(): boolean {
    try {
      return this.trim();
    } catch {
      return false;
    }
  }
}
