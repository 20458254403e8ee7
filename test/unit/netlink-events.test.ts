// The event watchers' message classification (built messages, as the kernel lays them out) and their socket
// handling with an injected socket: coalescing, an overrun (ENOBUFS) reported as 'lost' on the same socket, a
// failed socket replaced, a subscription failure at start rejected. The real kernel: test/integration/kernel-events.test.ts.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { classifyNftables } from '../../src/iptables/monitor';
import { KernelEvents, classifyRtnetlink } from '../../src/kernel/events';
import type { EventSocket } from '../../src/kernel/netlink-events';
import { rtnetlinkEventFilter } from '../../src/kernel/event-filter';

/** One netlink message: header (length, type), then `body`. */
function message(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeUInt32LE(16 + body.length, 0);
  head.writeUInt16LE(type, 4);
  return Buffer.concat([head, body]);
}
function attr(type: number, payload: Buffer): Buffer {
  const a = Buffer.alloc((4 + payload.length + 3) & ~3);
  a.writeUInt16LE(4 + payload.length, 0);
  a.writeUInt16LE(type, 2);
  payload.copy(a, 4);
  return a;
}
const str = (s: string): Buffer => Buffer.from(`${s}\0`);
/** An nf_tables message (subsystem 10) of `family` with the table name attribute (and a second attribute before it). */
const nft = (msg: number, family: number, table: string): Buffer =>
  message((10 << 8) | msg, Buffer.concat([Buffer.from([family, 0, 0, 0]), attr(0x8000 | 1, str(table)), attr(2, str('EC2NETD'))]));
const classifyOne = (f: (b: Buffer, o: number, l: number) => number, m: Buffer): number => f(m, 0, m.length);

describe('classifyNftables', () => {
  it('a rule, chain, set or table change of ip mangle or ip6 mangle is 1; other tables and families 0', () => {
    for (const msg of [0, 2, 3, 5, 6, 8, 9, 12, 14]) {
      expect(classifyOne(classifyNftables, nft(msg, 2, 'mangle'))).toBe(1);
      expect(classifyOne(classifyNftables, nft(msg, 10, 'mangle'))).toBe(1);
    }
    expect(classifyOne(classifyNftables, nft(6, 2, 'nat'))).toBe(0);
    expect(classifyOne(classifyNftables, nft(6, 10, 'filter'))).toBe(0);
    expect(classifyOne(classifyNftables, nft(6, 2, 'mangle2'))).toBe(0);
    expect(classifyOne(classifyNftables, nft(6, 1, 'mangle'))).toBe(0); // inet: not iptables'
    expect(classifyOne(classifyNftables, nft(15, 2, 'mangle'))).toBe(0); // NEWGEN
    expect(classifyOne(classifyNftables, message((11 << 8) | 6, Buffer.from([2, 0, 0, 0])))).toBe(0); // another subsystem
  });

  it('a malformed message (truncated attribute, short body) is 0, never an exception', () => {
    const m = nft(6, 2, 'mangle');
    m.writeUInt16LE(200, 20); // the first attribute claims more than the message holds
    expect(classifyOne(classifyNftables, m)).toBe(0);
    expect(classifyOne(classifyNftables, message((10 << 8) | 6, Buffer.from([2])))).toBe(0);
  });
});

describe('classifyRtnetlink', () => {
  const rtmsg = (table: number): Buffer => Buffer.from([2, 32, 0, 0, table, 236, 0, 1, 0, 0, 0, 0]);
  it('classifies by message type; routes of the local table are ignored', () => {
    const kinds = (type: number, body: Buffer = Buffer.alloc(16)): number => classifyOne(classifyRtnetlink, message(type, body));
    expect([16, 17].map((t) => kinds(t))).toEqual([1, 1]);
    expect([20, 21].map((t) => kinds(t))).toEqual([2, 2]);
    expect([32, 33].map((t) => kinds(t))).toEqual([8, 8]);
    expect(kinds(24, rtmsg(252))).toBe(4); // a table > 255 (in RTA_TABLE)
    expect(kinds(25, rtmsg(254))).toBe(4);
    expect(kinds(24, rtmsg(255))).toBe(0);
    expect(kinds(26)).toBe(0); // RTM_GETROUTE
  });
});

class FakeSocket extends EventEmitter implements EventSocket {
  /** The filter attached (set before the groups are joined?), or undefined. */
  filter: Buffer | undefined;
  filteredBeforeJoin: boolean | undefined;
  refuseFilter = false;
  groups: number[] = [];
  rcvbuf: [number, boolean | undefined] | undefined;
  closed = false;
  constructor(readonly port: number) {
    super();
  }
  addMembership(group: number): void { this.filteredBeforeJoin ??= this.filter !== undefined; this.groups.push(group); }
  attachFilter(program: Buffer): void {
    if (this.refuseFilter) throw Object.assign(new Error("setsockopt: Couldn't attach socket filter: invalid argument"), { code: 'EINVAL', syscall: 'setsockopt' });
    this.filter = program;
  }
  detachFilter(): void {
    if (this.filter === undefined) throw Object.assign(new Error('no filter'), { code: 'ENOENT' });
    this.filter = undefined;
  }
  setRecvBufferSize(size: number, force?: boolean): void { this.rcvbuf = [size, force]; }
  address(): { port: number } { return { port: this.port }; }
  close(): void { this.closed = true; }
}

/** `fail(n)`: whether the n-th open (0: the first) throws; `make`: the socket of the n-th open. */
function watcher(fail: (n: number) => boolean = () => false, make: (port: number) => FakeSocket = (port) => new FakeSocket(port)): { ev: KernelEvents; sockets: FakeSocket[]; log: string[] } {
  const sockets: FakeSocket[] = [];
  const log: string[] = [];
  let attempts = 0;
  const ev = new KernelEvents({
    backoffBaseMs: 1, receiveBufferBytes: 4096,
    openSocket: () => {
      if (fail(attempts++)) throw new Error('EPERM');
      const s = make(100 + sockets.length);
      sockets.push(s);
      return s;
    },
  });
  ev.on('unfiltered', (reason) => log.push(`unfiltered ${reason}`));
  ev.on('ready', (port) => log.push(`ready ${port}`));
  ev.on('change', (kinds) => log.push(`change ${[...kinds].sort().join(',')}`));
  ev.on('lost', (reason) => log.push(`lost ${reason}`));
  return { ev, sockets, log };
}
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const rtm = (type: number): Buffer => message(type, Buffer.alloc(16));

describe('NetlinkEvents (injected socket)', () => {
  it('subscribes the groups with the receive buffer forced, and coalesces the kinds of one turn', async () => {
    const { ev, sockets, log } = watcher();
    await ev.start();
    const s = sockets[0] as FakeSocket;
    expect(s.groups).toEqual([1, 5, 9, 7, 11, 8, 19]);
    expect(s.rcvbuf).toEqual([4096, true]);
    s.emit('message', rtm(32));
    s.emit('message', Buffer.concat([rtm(20), rtm(16)])); // two messages in one datagram
    s.emit('message', rtm(33));
    await turn();
    expect(log).toEqual(['ready 100', 'change address,link,rule']);
    await ev.stop();
    expect(s.closed).toBe(true);
    s.emit('message', rtm(16));
    await turn();
    expect(log).toHaveLength(2);
  });

  it("an RTM_DELLINK is an 'unlink' with its ifindex, before the turn's 'change' (only while someone listens)", async () => {
    const { ev, sockets, log } = watcher();
    await ev.start();
    const s = sockets[0] as FakeSocket;
    s.emit('message', rtm(17)); // nobody listens yet: nothing but the change
    await turn();
    ev.on('unlink', (index) => log.push(`unlink ${index}`));
    const ifinfo = Buffer.alloc(16);
    ifinfo.writeInt32LE(42, 4);
    s.emit('message', message(17, ifinfo));
    s.emit('message', message(17, Buffer.alloc(2))); // too short for an index: a change, no unlink
    await turn();
    expect(log).toEqual(['ready 100', 'change link', 'unlink 42', 'change link']);
    await ev.stop();
  });

  it("an overrun (ENOBUFS) is a 'lost' on the same socket; it goes on reporting", async () => {
    const { ev, sockets, log } = watcher();
    await ev.start();
    const s = sockets[0] as FakeSocket;
    s.emit('error', Object.assign(new Error('overrun'), { code: 'ENOBUFS' }));
    s.emit('message', rtm(24 + 1));
    await turn();
    expect(log).toEqual(['ready 100', 'lost rtnetlink events: receive buffer overrun (ENOBUFS), events were dropped', 'change route']);
    expect(s.closed).toBe(false);
    expect(ev.overruns).toBe(1);
    await ev.stop();
  });

  it("any other socket error: 'lost', a fresh socket after the backoff, and 'lost' again once subscribed", async () => {
    const { ev, sockets, log } = watcher((n) => n === 1); // the first reopen fails, the second works
    await ev.start();
    const first = sockets[0] as FakeSocket;
    const reopened = new Promise<void>((resolve) => ev.on('lost', (r) => { if (/reopened/.test(r)) resolve(); }));
    first.emit('error', Object.assign(new Error('poll failed: EIO'), { code: 'EIO' }));
    await reopened;
    expect(first.closed).toBe(true);
    expect(log).toEqual([
      'ready 100',
      'lost rtnetlink events: socket failed (poll failed: EIO); reopening in 1 ms',
      'lost rtnetlink events: cannot subscribe: EPERM; reopening in 2 ms',
      'ready 101',
      'lost rtnetlink events reopened: changes made while it was closed were not seen',
    ]);
    // Messages of the old socket are not reported; the new one's are.
    first.emit('message', rtm(16));
    (sockets[1] as FakeSocket).emit('message', rtm(20));
    await turn();
    expect(log.at(-1)).toBe('change address');
    await ev.stop();
  });

  it('start() rejects, without crashing, when the socket cannot be subscribed', async () => {
    const { ev, log } = watcher(() => true);
    await expect(ev.start()).rejects.toThrow('rtnetlink events: cannot subscribe: EPERM');
    expect(ev.port).toBeUndefined();
    expect(log).toEqual([]);
  });
});

describe('KernelEvents: the kernel filter', () => {
  const ownPortOf = (program: Buffer | undefined): string | undefined =>
    program === undefined ? undefined : program.equals(rtnetlinkEventFilter()) ? 'none' : [7, 8, 9].find((p) => program.equals(rtnetlinkEventFilter({ ownPort: p })))?.toString() ?? 'other';

  it('every socket gets the local-route filter before it joins the groups; the own port follows ignoreOwnWrites, reopens included', async () => {
    const { ev, sockets, log } = watcher();
    await ev.start();
    const first = sockets[0] as FakeSocket;
    expect([ownPortOf(first.filter), first.filteredBeforeJoin]).toEqual(['none', true]);
    ev.ignoreOwnWrites(7);
    expect(ownPortOf(first.filter)).toBe('7');
    ev.ignoreOwnWrites(undefined); // the request socket was dropped
    expect(ownPortOf(first.filter)).toBe('none');
    ev.ignoreOwnWrites(8);
    const reopened = new Promise<void>((resolve) => ev.on('lost', (r) => { if (/reopened/.test(r)) resolve(); }));
    first.emit('error', Object.assign(new Error('poll failed: EIO'), { code: 'EIO' }));
    await reopened;
    const second = sockets[1] as FakeSocket;
    expect([ownPortOf(second.filter), second.filteredBeforeJoin]).toEqual(['8', true]);
    expect(log.filter((l) => l.startsWith('unfiltered'))).toEqual([]);
    await ev.stop();
  });

  it("a filter the kernel refuses, or a socket that cannot filter: 'unfiltered', and the socket works unfiltered", async () => {
    const refusing = watcher(undefined, (port) => Object.assign(new FakeSocket(port), { refuseFilter: true }));
    await refusing.ev.start();
    const s = refusing.sockets[0] as FakeSocket;
    expect(s.filter).toBeUndefined();
    expect(s.groups).toHaveLength(7);
    refusing.ev.ignoreOwnWrites(9);
    s.emit('message', rtm(32));
    await turn();
    expect(refusing.log).toEqual([
      "unfiltered rtnetlink events: cannot attach the socket filter: setsockopt: Couldn't attach socket filter: invalid argument",
      'ready 100',
      "unfiltered rtnetlink events: cannot attach the socket filter: setsockopt: Couldn't attach socket filter: invalid argument",
      'change rule',
    ]);
    await refusing.ev.stop();

    const bare = watcher(undefined, (port) => Object.assign(new FakeSocket(port), { attachFilter: undefined }));
    await bare.ev.start();
    expect(bare.log[0]).toBe('unfiltered rtnetlink events: cannot attach the socket filter: this socket cannot attach a filter');
    await bare.ev.stop();
  });

  it('kernelFilter: false attaches nothing', async () => {
    const sockets: FakeSocket[] = [];
    const ev = new KernelEvents({ kernelFilter: false, openSocket: () => { const s = new FakeSocket(1); sockets.push(s); return s; } });
    await ev.start();
    ev.ignoreOwnWrites(7);
    expect(sockets[0]?.filter).toBeUndefined();
    await ev.stop();
  });
});
