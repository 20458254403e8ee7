// "When to sync", kept apart from "what to sync", after kube-proxy's BoundedFrequencyRunner:
// - requests accumulate the kinds of objects that changed; one run at a time; a burst of requests becomes one run
//   after `debounceMs` of quiet, or `debounceMaxMs` after its first request if it goes on (a mass deletion, 700 rule
//   messages over ~30 ms, is repaired by one run that sees all of it, not by one that starts 5 ms in and another
//   for the rest); requests made during a run cause exactly one more run;
// - minimum interval: runs take a token from a bucket of `burst` tokens, refilled one per `minIntervalMs`, so a
//   long storm of events (containers starting, a fight over a rule) costs a bounded number of runs per second while
//   the first runs after a quiet period start after `debounceMs` only. Every run pays, including one that the
//   notification of a run's own writes asks for (the kernel drops most of those before they reach the daemon:
//   src/kernel/event-filter.ts; link changes and IPv6 addresses carry no writer's port and still come): nothing
//   lets a loop run unbounded;
// - retry after error: a run that fails (resolves 'failed' or throws) is run again with its kinds after a backoff
//   (`retryBaseMs` doubling up to `retryMaxMs`; a run that succeeds resets it); other requests wait for it too;
// - maximum interval: `maxIntervalMs` after the last run of all of `fullKinds`, those kinds are requested: the
//   daemon's full kernel re-read, which finds what the kernel removes without a notification.
// An `urgent` request (new IMDS data: a hot-attached ENI is waiting for it) skips the bucket and the backoff; an
// `immediate` one skips the debounce (the caller bounds how often it asks so).
// - settle: work a run leaves for later (the daemon's: reading again what it wrote) runs right after it when nothing
//   else is asked for, as part of the run (requests made meanwhile wait for it), taking no token; a request pending
//   when the run ends goes first, and that run settles too.

export type RunOutcome = 'ok' | 'failed';

export interface TriggerOptions<K> {
  debounceMs: number;
  /** The most a burst that does not go quiet defers its run, from its first request (default: debounceMs). */
  debounceMaxMs?: number;
  minIntervalMs: number;
  burst: number;
  maxIntervalMs: number;
  /** The kinds of a full run; requested at the maximum interval. */
  fullKinds: Iterable<K>;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Milliseconds, monotonic (injected for tests). */
  now?: () => number;
  /** Called after a run that did not fail when nothing is pending (see the top of this file); must not throw. */
  settle?: () => Promise<void>;
}

export class SyncTrigger<K> {
  private pending = new Set<K>();
  private urgent = false;
  private immediate = false;
  /** When the pending requests began, and the last of them (the trailing debounce's clock). */
  private firstRequestAt = 0;
  private lastRequestAt = 0;
  /** Only a failed run's kinds are pending: idle() does not wait for the retry. */
  private retryOnly = false;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  private maxTimer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = false;
  private waiters: Array<() => void> = [];

  private tokens: number;
  private refilledAt: number;
  private failures = 0;
  private backoffUntil = 0;
  private readonly fullKinds: ReadonlySet<K>;
  private readonly now: () => number;

  constructor(
    private readonly run: (kinds: Set<K>) => Promise<RunOutcome | void>,
    private readonly opts: TriggerOptions<K>,
  ) {
    this.now = opts.now ?? (() => performance.now());
    this.tokens = opts.burst;
    this.refilledAt = this.now();
    this.fullKinds = new Set(opts.fullKinds);
  }

  request(kinds: Iterable<K>, urgent = false, immediate = false): void {
    if (this.stopped) return;
    const now = this.now();
    if (this.pending.size === 0) this.firstRequestAt = now;
    this.lastRequestAt = now;
    for (const k of kinds) this.pending.add(k);
    if (urgent) this.urgent = true;
    if (immediate) this.immediate = true;
    this.retryOnly = false;
    this.schedule();
  }

  /** Resolves when nothing is pending or running (a failed run waiting for its retry does not count). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** A run is in progress. */
  get busy(): boolean {
    return this.running;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.maxTimer !== undefined) clearTimeout(this.maxTimer);
    this.timer = undefined;
    this.maxTimer = undefined;
    this.pending.clear();
    this.settle();
  }

  private schedule(): void {
    if (this.stopped || this.running || this.pending.size === 0) return;
    const now = this.now();
    let at = now + (this.immediate ? 0 : this.opts.debounceMs);
    if (!this.urgent) at = Math.max(at, this.tokenAt(now), this.backoffUntil);
    if (this.timer !== undefined) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer); // an urgent request moves a distant run closer
    }
    this.timerAt = at;
    this.timer = setTimeout(() => void this.fire(), Math.ceil(at - now)); // never early
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    // Requests kept coming since the timer was set: wait for their quiet (not re-armed per request: a storm's
    // thousands of requests cost one timer each debounce).
    const quietAt = this.urgent || this.immediate ? 0
      : Math.min(this.lastRequestAt + this.opts.debounceMs, this.firstRequestAt + (this.opts.debounceMaxMs ?? this.opts.debounceMs));
    const now = this.now();
    if (quietAt > now) {
      this.timerAt = quietAt;
      this.timer = setTimeout(() => void this.fire(), Math.ceil(quietAt - now));
      return;
    }
    const kinds = this.pending;
    this.pending = new Set();
    this.urgent = false;
    this.immediate = false;
    this.retryOnly = false;
    this.refill(this.now());
    this.tokens = Math.max(0, this.tokens - 1);
    this.running = true;
    let outcome: RunOutcome;
    try {
      outcome = (await this.run(kinds)) ?? 'ok';
    } catch {
      outcome = 'failed'; // run() reports its own errors; a throw must not stop later runs
    }
    if (outcome === 'ok' && this.pending.size === 0 && !this.stopped && this.opts.settle !== undefined) {
      await this.opts.settle().catch(() => undefined);
    }
    this.running = false;
    if (this.stopped) return this.settle();
    if (outcome === 'failed') {
      this.failures++;
      this.backoffUntil = this.now() + Math.min(this.opts.retryBaseMs * 2 ** (this.failures - 1), this.opts.retryMaxMs);
      const fresh = this.pending.size > 0;
      for (const k of kinds) this.pending.add(k);
      this.retryOnly = !fresh;
    } else {
      this.failures = 0;
      this.backoffUntil = 0;
    }
    if ([...this.fullKinds].every((k) => kinds.has(k))) this.armMaxInterval();
    this.schedule();
    this.settle();
  }

  private armMaxInterval(): void {
    if (this.opts.maxIntervalMs <= 0) return;
    if (this.maxTimer !== undefined) clearTimeout(this.maxTimer);
    this.maxTimer = setTimeout(() => {
      this.maxTimer = undefined;
      this.request(this.fullKinds);
    }, this.opts.maxIntervalMs);
  }

  private refill(now: number): void {
    const { minIntervalMs, burst } = this.opts;
    this.tokens = minIntervalMs > 0 ? Math.min(burst, this.tokens + (now - this.refilledAt) / minIntervalMs) : burst;
    this.refilledAt = now;
  }

  /** When a whole token is there. */
  private tokenAt(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? now : now + (1 - this.tokens) * this.opts.minIntervalMs;
  }

  private isIdle(): boolean {
    return !this.running && (this.pending.size === 0 || this.retryOnly);
  }

  private settle(): void {
    if (!this.isIdle()) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
