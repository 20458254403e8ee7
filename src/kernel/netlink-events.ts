// A netlink socket of this process subscribed to multicast groups: the generic part of the event watchers
// (rtnetlink in src/kernel/events.ts, nftables in src/iptables/monitor.ts). Each message is classified into
// kinds from its header and a few bytes of its body, and the kinds are coalesced into one 'change' per
// event-loop turn. Anything that may have lost events ('lost') means: resync everything.
//
// An overrun of the receive buffer (a storm while the event loop was busy) drops messages: the patched
// `netlink` addon reports it as an ENOBUFS error and keeps the socket (patches/, docs/dependencies.md), which
// is a 'lost'. Any other socket error closes the socket, and a fresh one is opened after a backoff.
//
// A watcher may give the kernel a socket filter (classic BPF, setFilter): messages it drops are never queued, read
// or counted against the receive buffer. It is attached to every socket opened from then on (reopens included);
// when the kernel refuses it, the socket works unfiltered ('unfiltered'): a filter is an optimisation only.
//
// Events:
//   'change'     (kinds: Set<K>)    kinds seen since the last emit, coalesced per event-loop turn
//   'lost'       (reason: string)   events may have been missed
//   'ready'      (port: number)     a socket is subscribed (its netlink port id)
//   'unfiltered' (reason: string)   the socket filter could not be attached: every message is read
import { EventEmitter } from 'node:events';
import { RawNetlinkSocket } from './netlink-package';
import { NLMSG_HDRLEN } from './rtnl-codec';

/** Netlink protocol numbers. */
export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;

/**
 * Receive buffer asked for (SO_RCVBUFFORCE as root; the kernel doubles it for its bookkeeping). An event takes
 * ~1 KB of it (skb overhead included), so 8 MiB holds thousands of events while a sync keeps the event loop
 * busy; the memory is only used while events wait to be read.
 */
export const DEFAULT_RECEIVE_BUFFER = 8 << 20;

export interface NetlinkEventsOptions {
  /** SO_RCVBUF(FORCE) in bytes (default DEFAULT_RECEIVE_BUFFER); tests make it small to overrun it. */
  receiveBufferBytes?: number;
  /** Reopen delay after a socket failed: base * 2^n up to max (defaults 100 ms and 10 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Opens the socket (tests inject failing ones); default: the `netlink` package's raw socket. */
  openSocket?: (protocol: number) => EventSocket;
}

/** What the watcher uses of a raw netlink socket. */
export interface EventSocket {
  on(event: 'message', listener: (msg: Buffer) => void): unknown;
  on(event: 'error', listener: (err: Error & { code?: string }) => void): unknown;
  addMembership(group: number): void;
  setRecvBufferSize(size: number, force?: boolean): unknown;
  address(): { port: number };
  close(): void;
  /** SO_ATTACH_FILTER (replaces any filter); absent on sockets that cannot filter. */
  attachFilter?(program: Buffer): void;
  /** SO_DETACH_FILTER. */
  detachFilter?(): void;
}

/** What a concrete watcher supplies. */
export interface EventSourceSpec<K extends string> {
  /** For messages: `rtnetlink events`. */
  name: string;
  protocol: number;
  groups: readonly number[];
  /** Kinds the watcher reports, one bit each (index = bit number). */
  kinds: readonly K[];
  /** Bits of the kinds that the message at buf[offset, offset + length) reports (0: none). Called per message: keep it cheap. */
  classify(buf: Buffer, offset: number, length: number): number;
}

export declare interface NetlinkEvents<K extends string> {
  on(event: 'change', listener: (kinds: Set<K>) => void): this;
  on(event: 'lost', listener: (reason: string) => void): this;
  on(event: 'ready', listener: (port: number) => void): this;
  on(event: 'unfiltered', listener: (reason: string) => void): this;
  once(event: 'change', listener: (kinds: Set<K>) => void): this;
  once(event: 'lost', listener: (reason: string) => void): this;
  once(event: 'ready', listener: (port: number) => void): this;
  once(event: 'unfiltered', listener: (reason: string) => void): this;
}

export class NetlinkEvents<K extends string> extends EventEmitter {
  private readonly receiveBufferBytes: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly openSocket: (protocol: number) => EventSocket;
  private running = false;
  private sock: EventSocket | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  private reopens = 0;
  /** Kinds seen since the last 'change' (bit set), and whether an emit is scheduled. */
  private pending = 0;
  private scheduled = false;
  /** The socket filter every socket gets (setFilter), if any. */
  private filter: Buffer | undefined;
  /** Overruns reported so far (for tests and the bench). */
  overruns = 0;

  constructor(private readonly spec: EventSourceSpec<K>, options: NetlinkEventsOptions = {}) {
    super();
    this.receiveBufferBytes = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER;
    this.backoffBaseMs = options.backoffBaseMs ?? 100;
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000;
    this.openSocket = options.openSocket ?? ((protocol) => new RawNetlinkSocket(protocol, { recvBufferSize: 0, sendBufferSize: 0 }));
  }

  /** The port id of the subscribed socket, if one is open. */
  get port(): number | undefined {
    return this.sock?.address().port;
  }

  /**
   * The socket filter (a classic BPF program: src/kernel/event-filter.ts) for the open socket, now, and for every
   * socket opened later; undefined removes it. A filter the kernel refuses leaves the socket unfiltered ('unfiltered').
   */
  setFilter(program: Buffer | undefined): void {
    this.filter = program;
    if (this.sock !== undefined) this.applyFilter(this.sock);
  }

  private applyFilter(sock: EventSocket): void {
    const program = this.filter;
    try {
      if (program !== undefined) {
        if (sock.attachFilter === undefined) throw new Error('this socket cannot attach a filter');
        sock.attachFilter(program);
      } else {
        sock.detachFilter?.();
      }
    } catch (err) {
      // ENOENT: there was no filter to detach, which is what was wanted.
      if (program === undefined && (err as { code?: string }).code === 'ENOENT') return;
      if (program !== undefined) {
        // A half-known state is worse than none: the socket reads everything, as without a filter.
        try { sock.detachFilter?.(); } catch { /* none attached */ }
      }
      this.emit('unfiltered', `${this.spec.name}: cannot ${program === undefined ? 'detach' : 'attach'} the socket filter: ${(err as Error).message}`);
    }
  }

  /**
   * Subscribes; resolves once the socket is subscribed (synchronously done: no child to wait for). Rejects when
   * the first socket cannot be opened or subscribed; later failures are 'lost' events and reopens, never exceptions.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      this.open();
    } catch (err) {
      this.running = false;
      throw new Error(`${this.spec.name}: cannot subscribe: ${(err as Error).message}`);
    }
  }

  /** Closes the socket and every timer; no event is emitted afterwards. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.reopenTimer !== undefined) clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    this.pending = 0;
    const sock = this.sock;
    this.sock = undefined;
    if (sock !== undefined) closeQuietly(sock);
  }

  private open(): void {
    const sock = this.openSocket(this.spec.protocol);
    try {
      sock.setRecvBufferSize(this.receiveBufferBytes, true);
      // Before joining the groups, so that no message the filter would drop is ever queued.
      if (this.filter !== undefined) this.applyFilter(sock);
      for (const group of this.spec.groups) sock.addMembership(group);
    } catch (err) {
      closeQuietly(sock);
      throw err;
    }
    sock.on('message', (msg) => { if (this.sock === sock) this.onMessage(msg); });
    sock.on('error', (err) => this.onError(sock, err));
    this.sock = sock;
    this.emit('ready', sock.address().port);
  }

  private onError(sock: EventSocket, err: Error & { code?: string }): void {
    if (this.sock !== sock || !this.running) return;
    if (err.code === 'ENOBUFS') {
      // The socket goes on; only the messages that did not fit were dropped.
      this.overruns++;
      this.emit('lost', `${this.spec.name}: receive buffer overrun (ENOBUFS), events were dropped`);
      return;
    }
    this.sock = undefined;
    closeQuietly(sock);
    this.scheduleReopen(`${this.spec.name}: socket failed (${err.message})`);
  }

  private scheduleReopen(reason: string): void {
    const delay = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this.reopens);
    this.reopens++;
    this.emit('lost', `${reason}; reopening in ${delay} ms`);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = undefined;
      if (!this.running) return;
      try {
        this.open();
      } catch (err) {
        this.scheduleReopen(`${this.spec.name}: cannot subscribe: ${(err as Error).message}`);
        return;
      }
      this.reopens = 0;
      // Subscribed again: the resync this causes sees what changed while no socket listened.
      this.emit('lost', `${this.spec.name} reopened: changes made while it was closed were not seen`);
    }, delay);
  }

  /** One datagram: usually one message (a notification), possibly several. Protected: the test tool watches it. */
  protected onMessage(buf: Buffer): void {
    let seen = 0;
    for (let off = 0; off + NLMSG_HDRLEN <= buf.length;) {
      const length = buf.readUInt32LE(off);
      if (length < NLMSG_HDRLEN || off + length > buf.length) break;
      const bits = this.spec.classify(buf, off, length);
      if (bits !== 0) this.inspect(buf, off, length);
      seen |= bits;
      off += (length + 3) & ~3;
    }
    if (seen === 0) return;
    this.pending |= seen;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** A watcher that uses a message's contents reads them here (called for each message of a reported kind). */
  protected inspect(_buf: Buffer, _offset: number, _length: number): void {
    // Nothing by default: kinds only.
  }

  private flush(): void {
    this.scheduled = false;
    const bits = this.pending;
    this.pending = 0;
    if (bits === 0 || !this.running) return;
    this.emit('change', new Set<K>(this.spec.kinds.filter((_, i) => (bits & (1 << i)) !== 0)));
  }
}

function closeQuietly(sock: EventSocket): void {
  try {
    sock.close();
  } catch {
    // Closed already (the addon closes a socket whose poll failed).
  }
}
