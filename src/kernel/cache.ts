// The kernel state as last read, refreshed by kind: an event says which kinds changed, and only those are dumped.
import type { KernelLink, KernelState } from '../core/types';
import type { Netlink } from './netlink';
import { ALL_KINDS, readKernelState, type ObjectKind } from './observe';

export class KernelCache {
  private state: KernelState | undefined;
  /** Kinds ec2netd wrote since the last observe: read again next time, whatever kinds that observe asks for. */
  private readonly staleKinds = new Set<ObjectKind>();
  /** The links of the last observation, kept when the rest is dropped (the last-good merge needs them). */
  links: readonly KernelLink[] = [];

  constructor(private readonly nl: Netlink) {}

  /**
   * Dumps the kinds that changed (everything the first time, and after forget()). A link or address change also
   * re-reads the routes: the kernel removes IPv4 routes without a notification when their link goes down or their
   * `src` address goes away, and a cached route that is no longer there would never be repaired. `newLinksOnly`: the
   * link messages were all about links the cache does not know (they appeared): none of them can have taken a route
   * with it, so a 'link' alone reads the links (a hot attach's sync: the routes are most of a dump at 15 x 50, 750
   * local-table routes read to be dropped).
   */
  async observe(kinds: ReadonlySet<ObjectKind>, opts: { newLinksOnly?: boolean } = {}): Promise<KernelState> {
    const ask = new Set(this.state === undefined ? ALL_KINDS : [...kinds, ...this.staleKinds]);
    const linkRoutes = this.state === undefined || opts.newLinksOnly !== true || this.staleKinds.has('link');
    if ((ask.has('link') && linkRoutes) || ask.has('address')) ask.add('route');
    this.state = await readKernelState(this.nl, ask, this.state);
    this.staleKinds.clear();
    this.links = this.state.links;
    return this.state;
  }

  /**
   * ec2netd wrote objects of these kinds (attempted: a request that timed out may have been applied): the next
   * observe reads them again rather than trusting the plan. No notification of the writes asks for that read any
   * more (the kernel drops them: src/kernel/event-filter.ts), and the other kinds stay as good as the events keep
   * them: what the kernel changes by itself because of a write comes as its own notification (a link set up: its
   * IPv6 link-local address; an address deleted: its own notification is kept for the secondaries the kernel drops
   * with it), except the IPv4 routes it removes silently with an address or a link, which the link and address
   * kinds' route re-read covers.
   */
  written(kinds: Iterable<ObjectKind>): void {
    for (const k of kinds) this.staleKinds.add(k);
  }

  /** Kinds written since the last observe, to read again (none while nothing is cached: the next observe reads all). */
  get stale(): ReadonlySet<ObjectKind> {
    return this.state === undefined ? new Set() : this.staleKinds;
  }

  /** The next observe() reads everything: after lost events, a failed sync, on SIGHUP and at the maximum interval. */
  forget(): void {
    this.state = undefined;
  }

  /** Whether the cached links have this ifindex (false while nothing is cached). */
  knowsLink(index: number): boolean {
    return this.state?.links.some((l) => l.index === index) ?? false;
  }

  get current(): KernelState | undefined {
    return this.state;
  }
}
