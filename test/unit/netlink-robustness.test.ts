// The netlink handle's failure paths, with an injected socket factory (a real socket cannot be made to fail on
// demand): a failed socket is replaced for the next request; a dump the kernel keeps flagging as interrupted
// fails instead of returning a partial list.
import { EventEmitter } from 'node:events';
import type { RtNetlinkSocket } from 'netlink';
import { rt } from 'netlink';
import { describe, expect, it } from 'vitest';
import { DUMP_ATTEMPTS, KernelError, Netlink } from '../../src/kernel/netlink';

const NLM_F_MULTI = 0x2;
const NLM_F_DUMP_INTR = 0x10;
const NLMSG_DONE = 3;

interface Msg { type: number; flags: number; data: Buffer }

/** The parts of the package's socket that Netlink uses; `reply` answers each raw request. */
class FakeRaw extends EventEmitter {
  closed = false;
  requests = 0;
  constructor(private readonly reply: (n: number) => Promise<[Msg[], object]>, private readonly port = 4242) { super(); }
  address(): { port: number } { return { port: this.port }; }
  private seq = 0;
  generateSeq(): number { return ++this.seq; }
  /** The OS socket under the package's: sendAll's batches go through it; this one refuses every send. */
  readonly socket = { send: (_buf: Buffer, _opts: object, cb: (err: NodeJS.ErrnoException) => void): void => cb(Object.assign(new Error('sendmsg: ENOBUFS'), { code: 'ENOBUFS' })) };
  close(): void { this.closed = true; }
  request(): Promise<[Msg[], object]> {
    this.requests++;
    return this.reply(this.requests);
  }
}

class FakeSocket extends EventEmitter {
  constructor(readonly socket: FakeRaw) { super(); }
}

function factory(reply: (n: number) => Promise<[Msg[], object]> = async () => [[], {}]) {
  const made: FakeSocket[] = [];
  const createSocket = (): RtNetlinkSocket => {
    const s = new FakeSocket(new FakeRaw(reply, 4242 + made.length));
    made.push(s);
    return s as unknown as RtNetlinkSocket;
  };
  return { made, createSocket };
}

const link = (n: number, flags = NLM_F_MULTI): Msg => ({ type: rt.MessageType.NEWLINK, flags, data: Buffer.from([n]) });
const done: Msg = { type: NLMSG_DONE, flags: NLM_F_MULTI, data: Buffer.alloc(4) };
const dumpLinks = (nl: Netlink): Promise<number[]> => nl.dumpWith('dump links', rt.MessageType.GETLINK, [], (_t, data) => data[0]);

describe('Netlink: a failed socket is replaced', () => {
  it('an error event on the socket: it is closed, and the next request goes through a fresh one', async () => {
    const { made, createSocket } = factory(async () => [[link(1), done], {}]);
    const nl = new Netlink({ createSocket });
    expect(await dumpLinks(nl)).toEqual([1]);
    made[0]?.socket.emit('error', Object.assign(new Error('recvmsg: ENOBUFS'), { code: 'ENOBUFS' }));
    expect(made[0]?.socket.closed).toBe(true);
    expect(await dumpLinks(nl)).toEqual([1]);
    expect([made.length, nl.opened, made[1]?.socket.requests]).toEqual([2, 2, 1]);
    nl.close();
    expect(made[1]?.socket.closed).toBe(true);
  });

  it('a request that ends without the kernel\'s answer (timeout, send error) drops the socket; a kernel answer (EEXIST) does not', async () => {
    const { made, createSocket } = factory();
    const nl = new Netlink({ createSocket });
    await expect(nl.call('add rule x', () => Promise.reject(new Error('Request rejected: EEXIST')))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(nl.opened).toBe(1);
    await expect(nl.call('add rule x', () => Promise.reject(new Error('Timeout has been reached')))).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(made[0]?.socket.closed).toBe(true);
    await expect(nl.call('add rule x', () => Promise.reject(Object.assign(new Error('send: EBADF'), { code: 'EBADF' })))).rejects.toMatchObject({ code: 'EBADF' });
    expect(nl.opened).toBe(2);
    expect(await nl.call('add rule x', async () => 'ok')).toBe('ok');
    expect(nl.opened).toBe(3);
    expect(made.map((s) => s.socket.closed)).toEqual([true, true, false]);
  });
});

describe('Netlink: the port of the request socket, for the event filter', () => {
  it('is told when a socket opens (before anything is sent on it), when it is dropped, and when the handle closes', async () => {
    const { made, createSocket } = factory(async () => [[link(1), done], {}]);
    const nl = new Netlink({ createSocket });
    const ports: Array<number | undefined> = [];
    nl.onPort = (port) => ports.push(port);
    const req = { type: rt.MessageType.NEWRULE, flags: 0, body: [Buffer.alloc(12)] };
    // The fake refuses every send: the port was told before the send, and the socket is dropped after it.
    expect(await nl.sendAll([req])).toEqual(['ENOBUFS']);
    expect(ports).toEqual([4242, undefined]);
    expect(await dumpLinks(nl)).toEqual([1]);
    expect(ports).toEqual([4242, undefined, 4243]);
    made[1]?.socket.emit('error', new Error('recvmsg: EIO'));
    expect(ports).toEqual([4242, undefined, 4243, undefined]);
    expect(await dumpLinks(nl)).toEqual([1]);
    nl.close();
    expect(ports).toEqual([4242, undefined, 4243, undefined, 4244, undefined]);
  });
});

describe('Netlink: batched writes', () => {
  it('a batch whose sendmsg fails: every request of it gets the error, and the next batch goes through a fresh socket', async () => {
    const { made, createSocket } = factory();
    const nl = new Netlink({ createSocket });
    const req = { type: rt.MessageType.NEWRULE, flags: 0, body: [Buffer.alloc(12)] };
    expect(await nl.sendAll([req, req])).toEqual(['ENOBUFS', 'ENOBUFS']);
    expect(made[0]?.socket.closed).toBe(true);
    expect(await nl.sendAll([req])).toEqual(['ENOBUFS']);
    expect(nl.opened).toBe(2);
  });
});

describe('Netlink: interrupted dumps', () => {
  it('re-runs a dump the kernel flagged NLM_F_DUMP_INTR and returns the clean one', async () => {
    const { made, createSocket } = factory(async (n) => (n === 1 ? [[link(1), link(2, NLM_F_MULTI | NLM_F_DUMP_INTR), done], {}] : [[link(1), link(3), done], {}]));
    const nl = new Netlink({ createSocket });
    expect(await dumpLinks(nl)).toEqual([1, 3]);
    expect(made[0]?.socket.requests).toBe(2);
  });

  it(`still interrupted after ${DUMP_ATTEMPTS} attempts: a KernelError (EINTR), never the partial list`, async () => {
    const { made, createSocket } = factory(async () => [[link(1, NLM_F_MULTI | NLM_F_DUMP_INTR), done], {}]);
    const nl = new Netlink({ createSocket });
    const err = await dumpLinks(nl).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(KernelError);
    expect(err).toMatchObject({ code: 'EINTR', what: 'dump links' });
    expect(made[0]?.socket.requests).toBe(DUMP_ATTEMPTS);
    // The queue goes on: the next dump runs.
    expect(await nl.call('x', async () => 1)).toBe(1);
  });
});
