// "When to sync", kept apart from "what to sync" (after kube-proxy's BoundedFrequencyRunner):
// requests accumulate the kinds of objects that changed; one run at a time; a burst becomes one run
// after a short quiet time; requests made during a run cause exactly one more run. Runs are rate-limited
// by a token bucket (`burst` runs, one more every `minIntervalMs`): a long storm of events (containers
// starting) costs a bounded number of runs per second, while the first runs after a quiet period (a
// repair, a new ENI) start after `debounceMs` only. A run that follows a run that wrote to the kernel is
// free: it mostly sees the echo of those writes, and there is at most one such run per writing run.

export class SyncTrigger<K> {
  private pending = new Set<K>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private waiters: Array<() => void> = [];

  private urgent = false;
  private timerAt = 0;
  private tokens: number;
  /** The last run wrote: the next one (the echo of those writes) costs no token. */
  private freeNext = false;
  private refilledAt = performance.now();

  constructor(
    /** Resolves true when the run wrote to the kernel. */
    private readonly run: (kinds: Set<K>) => Promise<boolean | void>,
    private readonly debounceMs: number,
    private readonly minIntervalMs = 0,
    private readonly burst = 5,
  ) {
    this.tokens = burst;
  }

  /** `urgent`: this request skips the rate limit (new IMDS data: a hot-attached ENI is waiting for it). */
  request(kinds: Iterable<K>, urgent = false): void {
    if (this.stopped) return;
    for (const k of kinds) this.pending.add(k);
    if (urgent) this.urgent = true;
    this.schedule();
  }

  /** Resolves when nothing is pending or running. */
  idle(): Promise<void> {
    if (this.running === undefined && this.timer === undefined && this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** A run is in progress. */
  get busy(): boolean {
    return this.running !== undefined;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    this.settle();
  }

  private schedule(): void {
    if (this.running !== undefined || this.pending.size === 0) return;
    const wait = this.urgent || this.freeNext ? this.debounceMs : Math.max(this.debounceMs, this.tokenWaitMs());
    if (this.timer !== undefined) {
      if (!this.urgent || this.timerAt <= performance.now() + wait) return;
      clearTimeout(this.timer); // an urgent request moves a distant run closer
    }
    this.timerAt = performance.now() + wait;
    this.timer = setTimeout(() => void this.fire(), wait);
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    const kinds = this.pending;
    this.pending = new Set();
    this.urgent = false;
    this.refill();
    if (!this.freeNext) this.tokens = Math.max(0, this.tokens - 1);
    // run() reports its own errors; a throw here must not stop later runs.
    const running = this.run(kinds).then((wrote) => wrote === true, () => false);
    this.running = running.then(() => undefined);
    this.freeNext = await running;
    this.running = undefined;
    this.schedule();
    this.settle();
  }

  private refill(): void {
    const now = performance.now();
    if (this.minIntervalMs > 0) this.tokens = Math.min(this.burst, this.tokens + (now - this.refilledAt) / this.minIntervalMs);
    else this.tokens = this.burst;
    this.refilledAt = now;
  }

  /** How long until a whole token is there (0: now). */
  private tokenWaitMs(): number {
    this.refill();
    return this.tokens >= 1 ? 0 : (1 - this.tokens) * this.minIntervalMs;
  }

  private settle(): void {
    if (this.running !== undefined || this.timer !== undefined || this.pending.size > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
