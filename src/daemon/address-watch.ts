// The daemon's side of src/core/address-watch.ts: compares each kernel observation with the previous one, reads the
// ENIs whose addresses changed unexplained (targeted IMDS reads, serialized with the daemon's other reads), and asks
// for a sync after each read. Why and the rules: src/core/address-watch.ts and docs/failover.md.
import { AddressWatch, afterWrites, DEFAULT_WATCH_POLICY, type KernelAddresses, type WatchPolicy } from '../core/address-watch';
import { linkForMac } from '../core/desired';
import type { Change, ImdsSnapshot, KernelLink, KernelState } from '../core/types';
import type { Logger } from '../log';

export interface AddressWatcherDeps {
  log: Logger;
  /** The snapshot the last sync planned from. */
  snapshot(): ImdsSnapshot | undefined;
  /** Re-reads one ENI's keys; resolves with the snapshot after the read, undefined when it failed. */
  read(mac: string): Promise<ImdsSnapshot | undefined>;
  /** A read changed what may be wanted: sync soon. */
  replan(): void;
}

export class AddressWatcher {
  private readonly watch: AddressWatch;
  private previous: KernelAddresses | undefined;
  private links: readonly KernelLink[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly reading = new Set<string>();
  private stopped = false;

  constructor(private readonly deps: AddressWatcherDeps, private readonly policy: WatchPolicy = DEFAULT_WATCH_POLICY) {
    this.watch = new AddressWatch(policy);
  }

  /** Each kernel observation of a sync, before it plans: a vanished address is held back in that same plan. */
  observed(kernel: KernelState): void {
    // The kernel's arrays themselves (a dump's arrays are never changed in place): the same addresses array as last
    // time then means nothing to compare (unexplainedChanges).
    const current: KernelAddresses = { links: kernel.links, addresses: kernel.addresses };
    const before = this.previous;
    this.previous = current;
    this.links = current.links;
    const snapshot = this.deps.snapshot();
    if (before === undefined || snapshot === undefined || this.stopped) return;
    const changes = this.watch.observe(before, current, snapshot, performance.now());
    for (const c of changes) {
      const name = this.nameOf(c.mac);
      this.deps.log.info({ action: 'address-event', iface: name, address: c.address },
        c.change === 'appeared'
          ? `${c.address} added on ${name}, not listed by IMDS (yet): re-reading ${c.mac} until it is (a failover?)`
          : `${c.address} deleted from ${name} while IMDS lists it: not put back while ${c.mac} is re-read (a failover?)`);
    }
    if (changes.length > 0) this.schedule();
  }

  /**
   * ec2netd's own writes that the kernel took: the next observation is compared with the state they left, not with
   * the one before them (no echo of them arrives to make a sync observe it: afterWrites in src/core/address-watch.ts).
   */
  wrote(inPlace: readonly Change[]): void {
    if (this.previous !== undefined) this.previous = afterWrites(this.previous, inPlace);
  }

  /** A vanished address whose watch runs: not re-added (Reconciler.planFor asks). */
  heldBack(mac: string, address: string): boolean {
    return this.watch.heldBack(mac, address);
  }

  /** One line per watched address, for `ec2netd status`. */
  notes(): string[] {
    return this.watch.watched().map((w) => (w.change === 'appeared'
      ? `${w.address} on ${this.nameOf(w.mac)} is not listed by IMDS yet: re-reading ${w.mac}`
      : `${w.address} was deleted from ${this.nameOf(w.mac)} while IMDS lists it: not put back while ${w.mac} is re-read`));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private nameOf(mac: string): string {
    return linkForMac([...this.links], mac)?.name ?? mac;
  }

  /** One timer for the earliest read due among MACs not being read. */
  private schedule(): void {
    if (this.stopped) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const due = this.watch.due().filter((d) => !this.reading.has(d.mac));
    if (due.length === 0) return;
    const at = Math.min(...due.map((d) => d.at));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = performance.now();
      for (const d of this.watch.due()) if (d.at <= now + 1 && !this.reading.has(d.mac)) void this.readOne(d.mac);
      this.schedule();
    }, Math.max(0, at - performance.now()));
  }

  private async readOne(mac: string): Promise<void> {
    this.reading.add(mac);
    const startedAt = performance.now();
    this.watch.readStarted(mac, startedAt);
    let snapshot: ImdsSnapshot | undefined;
    try {
      snapshot = await this.deps.read(mac);
    } catch {
      snapshot = undefined; // a failed read is a read that explained nothing; the window still bounds the watch
    }
    this.reading.delete(mac);
    if (this.stopped) return;
    const out = this.watch.readDone(mac, startedAt, snapshot, performance.now());
    const name = this.nameOf(mac);
    for (const a of out.released) {
      this.deps.log.warn({ action: 'address-event', iface: name, address: a },
        `${a} was deleted from ${name} but IMDS still lists it ${Math.round(this.policy.holdMs / 1000)} s later: putting it back`);
    }
    for (const a of out.expired) {
      this.deps.log.info({ action: 'address-event', iface: name, address: a },
        `IMDS did not list ${a} on ${name} within ${Math.round(this.policy.windowMs / 1000)} s: left to the periodic refresh`);
    }
    for (const a of out.resolved) this.deps.log.debug({ action: 'address-event', iface: name, address: a }, `IMDS now agrees about ${a} on ${name}`);
    this.deps.replan();
    this.schedule();
  }
}
