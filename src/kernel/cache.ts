// The kernel state as last read, refreshed by kind: an event says which kinds changed, and only those are dumped.
import type { KernelLink, KernelState } from '../core/types';
import type { Netlink } from './netlink';
import { ALL_KINDS, readKernelState, type ObjectKind } from './observe';

export class KernelCache {
  private state: KernelState | undefined;
  /** The links of the last observation, kept when the rest is dropped (the last-good merge needs them). */
  links: KernelLink[] = [];

  constructor(private readonly nl: Netlink) {}

  /**
   * Dumps the kinds that changed (everything the first time, and after forget()). A link or address change also
   * re-reads the routes: the kernel removes IPv4 routes without a notification when their link goes down or their
   * `src` address goes away, and a cached route that is no longer there would never be repaired.
   */
  async observe(kinds: ReadonlySet<ObjectKind>): Promise<KernelState> {
    const ask = new Set(this.state === undefined ? ALL_KINDS : kinds);
    if (ask.has('link') || ask.has('address')) ask.add('route');
    this.state = await readKernelState(this.nl, ask, this.state);
    this.links = this.state.links;
    return this.state;
  }

  /** The next observe() reads everything: after writes, lost events, on SIGHUP and at the maximum interval. */
  forget(): void {
    this.state = undefined;
  }

  get current(): KernelState | undefined {
    return this.state;
  }
}
