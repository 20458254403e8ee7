// "When to sync", kept apart from "what to sync" (after kube-proxy's BoundedFrequencyRunner):
// requests accumulate the kinds of objects that changed; one run at a time; a burst becomes one run
// after a short quiet time; requests made during a run cause exactly one more run.

export class SyncTrigger<K> {
  private pending = new Set<K>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly run: (kinds: Set<K>) => Promise<void>,
    private readonly debounceMs: number,
  ) {}

  request(kinds: Iterable<K>): void {
    if (this.stopped) return;
    for (const k of kinds) this.pending.add(k);
    this.schedule();
  }

  /** Resolves when nothing is pending or running. */
  idle(): Promise<void> {
    if (this.running === undefined && this.timer === undefined && this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    this.settle();
  }

  private schedule(): void {
    if (this.timer !== undefined || this.running !== undefined || this.pending.size === 0) return;
    this.timer = setTimeout(() => void this.fire(), this.debounceMs);
  }

  private async fire(): Promise<void> {
    this.timer = undefined;
    const kinds = this.pending;
    this.pending = new Set();
    // run() reports its own errors; a throw here must not stop later runs.
    this.running = this.run(kinds).catch(() => undefined);
    await this.running;
    this.running = undefined;
    this.schedule();
    this.settle();
  }

  private settle(): void {
    if (this.running !== undefined || this.timer !== undefined || this.pending.size > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
