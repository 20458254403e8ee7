// The rtnetlink handle: one request socket, a timeout on every request, and errors with a code and the object named.
//
// The socket is never subscribed to a multicast group: it only receives replies to its own requests, and the
// kernel paces dump replies to the reader, so it cannot overrun (events come from their own sockets,
// src/kernel/events.ts).
// It is unreferenced while idle (the package default), so an idle handle never keeps the event loop alive.
import { getSystemErrorName } from 'node:util';
import { createRtNetlink, formatMessage } from './netlink-package';
import type { NetlinkMessage, RequestOptions, RtNetlinkSocket } from './netlink-package';
import { bigIntToIpv6, ipv6ToBigInt } from '../core/ip';
import type { Family } from '../core/types';
import { NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR } from './rtnl-codec';

/** errno names the adapter distinguishes; any other errno name may also appear. */
export type KernelErrorCode =
  | 'EEXIST'
  | 'ENOENT'
  | 'ESRCH'
  | 'ENODEV'
  | 'EADDRNOTAVAIL'
  | 'ENETUNREACH'
  | 'EINVAL'
  | 'EPERM'
  | 'ETIMEDOUT'
  /** The kernel said EEXIST, but a re-read found no equal object: another object holds the slot. */
  | 'ECONFLICT'
  | 'EIO'
  | (string & {});

export class KernelError extends Error {
  override name = 'KernelError';
  constructor(
    readonly code: KernelErrorCode,
    /** What was attempted, in `ip` syntax: `add rule from 10.0.1.20 lookup 10001 pref 10100 proto 236`. */
    readonly what: string,
    detail?: string,
  ) {
    super(`${what}: ${code}${detail === undefined ? '' : ` (${detail})`}`);
  }
}

/** Turns whatever the package threw into a KernelError naming the object. */
export function toKernelError(err: unknown, what: string): KernelError {
  if (err instanceof KernelError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const rejected = /^Request rejected: (\w+)$/.exec(message);
  if (rejected?.[1] !== undefined) return new KernelError(rejected[1], what);
  if (message === 'Timeout has been reached') return new KernelError('ETIMEDOUT', what);
  const code = (err as { code?: unknown } | null)?.code;
  return new KernelError(typeof code === 'string' ? code : 'EIO', what, message);
}

/** Whether a request failure is the kernel's NLMSG_ERROR answer (as opposed to a socket or timeout failure). */
function isKernelAnswer(err: unknown): boolean {
  return err instanceof KernelError ? err.code !== 'ETIMEDOUT' && err.code !== 'EIO'
    : err instanceof Error && /^Request rejected: \w+$/.test(err.message);
}

export const AF_INET = 2;
export const AF_INET6 = 10;
export const NLM_F_CREATE_EXCL = NLM_F_CREATE | NLM_F_EXCL;
export const NLM_F_CREATE_REPLACE = NLM_F_CREATE | NLM_F_REPLACE;
/** RT_TABLE_COMPAT: what the 8-bit table field says when the real table (> 255) is in the table attribute. */
export const RT_TABLE_COMPAT = 252;


/** One write for Netlink.sendAll: an rtnetlink message (type, flags, encoded body) and what it does, for errors. */
export interface NetlinkRequest {
  type: number;
  /** NLM_F_CREATE, EXCL, REPLACE; REQUEST and ACK are added. */
  flags: number;
  body: Uint8Array[];
}

/**
 * Messages per sendmsg and per round of replies. Each request is answered by one ACK, which the kernel queues on
 * this socket before sendmsg returns; an ACK takes ~830 bytes of the receive buffer (measured: 20 ACKs, half of
 * them errors echoing the request, 16640 bytes of Rmem), and the buffer is 208 KB. An overrun would drop ACKs (the
 * requests would time out; the patched addon reports it instead of aborting the process: docs/dependencies.md).
 * 64 in flight use a quarter of the buffer; IOV_MAX is not an issue because
 * a batch is sent as one buffer.
 */
export const BATCH_MAX = 64;
const PAD = Buffer.alloc(4);

export interface NetlinkOptions {
  /** Timeout of each request in ms (config sync.requestTimeoutMs). */
  timeoutMs?: number;
  /** Opens a socket (tests inject failing ones); default: the package's createRtNetlink. */
  createSocket?: () => RtNetlinkSocket;
}

/** Told the port of each request socket when it opens, and undefined when it is dropped or closed. */
export type PortListener = (port: number | undefined) => void;

/** How many times a dump is re-run when the kernel flags it interrupted, before the read fails. */
export const DUMP_ATTEMPTS = 3;

/**
 * An rtnetlink request handle, bound to the network namespace of the process that opened it. A socket that
 * failed (an error event, or a request that ended without the kernel's answer: a send error, a timeout) is
 * closed, and the next request opens a fresh one: a wedged socket never stays in use.
 */
export class Netlink {
  readonly timeoutMs: number;
  private readonly createSocket: () => RtNetlinkSocket;
  private current: RtNetlinkSocket | undefined;
  private closed = false;
  private port: number | undefined;
  /** Sockets opened so far (1 + reopens after failures). */
  opened = 0;
  /** Dumps are queued: the kernel runs one dump per socket at a time and answers a second one EBUSY. */
  private dumping: Promise<unknown> = Promise.resolve();
  /** sendAll's requests waiting for their ACK, by sequence number. */
  private readonly acks = new Map<number, (errno: number) => void>();
  /**
   * Called synchronously when a socket opens, before anything is sent on it, and when it goes: the daemon's event
   * socket filters out the notifications of this port's writes (src/kernel/events.ts), and must follow a reopen.
   */
  onPort: PortListener | undefined;

  constructor(options: NetlinkOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 2000;
    // No options: `ref` defaults to false, and the package's option type wrongly requires the buffer sizes.
    this.createSocket = options.createSocket ?? (() => createRtNetlink());
  }

  /** The socket requests go through; opened on first use and again after a failure. */
  get socket(): RtNetlinkSocket {
    if (this.closed) throw new KernelError('EBADF', 'netlink', 'netlink handle closed');
    if (this.current === undefined) {
      const sock = this.createSocket();
      this.opened++;
      // A raw socket error with no listener would throw from an EventEmitter; the socket is dropped instead.
      sock.socket.on('error', () => this.drop(sock));
      // Replies to sequence numbers the package does not track (sendAll's) arrive as 'message'.
      sock.socket.on('message', (msgs: NetlinkMessage[]) => {
        for (const msg of msgs) {
          const done = this.acks.get(msg.seq);
          if (done === undefined || msg.type !== NLMSG_ERROR || msg.data.length < 4) continue;
          this.acks.delete(msg.seq);
          done(-msg.data.readInt32LE(0));
        }
      });
      this.current = sock;
      this.port = sock.socket.address().port;
      this.onPort?.(this.port);
    }
    return this.current;
  }

  /** Closes `sock` if it is the current socket; the next request opens a new one. */
  private drop(sock: RtNetlinkSocket): void {
    if (this.current !== sock) return;
    this.current = undefined;
    this.port = undefined;
    try {
      sock.socket.close();
    } catch {
      // Closed already.
    }
    this.onPort?.(undefined);
  }

  /**
   * Sends many requests, up to BATCH_MAX per sendmsg, and resolves with each one's outcome in order: undefined
   * (acknowledged) or the errno name the kernel answered ('EEXIST', ...; 'ETIMEDOUT' when no answer came within
   * the timeout). The kernel handles the messages of one sendmsg one after the other, in order, exactly as if they
   * had been sent one by one: a later message sees what an earlier one did, and a failed one does not stop the
   * next. Every request is told apart by its sequence number, so an error is always attributed to its own
   * object. Never throws for a kernel answer; throws a KernelError when the handle is closed.
   */
  async sendAll(requests: readonly NetlinkRequest[]): Promise<(string | undefined)[]> {
    if (this.closed) throw new KernelError('EBADF', 'netlink writes', 'netlink handle closed');
    const out: (string | undefined)[] = new Array<string | undefined>(requests.length);
    for (let start = 0; start < requests.length; start += BATCH_MAX) {
      // Each batch takes the current socket: one that failed the previous batch has been replaced.
      const sock = this.socket;
      this.port ??= sock.socket.address().port;
      await this.sendBatch(sock, requests, start, Math.min(requests.length, start + BATCH_MAX), out);
    }
    return out;
  }

  private sendBatch(sock: RtNetlinkSocket, requests: readonly NetlinkRequest[], start: number, end: number, out: (string | undefined)[]): Promise<void> {
    const parts: Uint8Array[] = [];
    const seqs: number[] = [];
    for (let i = start; i < end; i++) {
      const r = requests[i] as NetlinkRequest;
      const seq = sock.socket.generateSeq();
      seqs.push(seq);
      let length = 0;
      for (const b of formatMessage({ type: r.type, flags: r.flags | NLM_F_REQUEST | NLM_F_ACK, seq, port: this.port ?? 0, data: r.body })) {
        parts.push(b);
        length += b.length;
      }
      // The kernel finds the next message at NLMSG_ALIGN(nlmsg_len); the package does not pad the last attribute
      // (a u8 protocol ends a rule without selectors at an odd length).
      if (length % 4 !== 0) parts.push(PAD.subarray(0, 4 - (length % 4)));
    }
    return new Promise<void>((resolve) => {
      let left = seqs.length;
      const finish = (): void => {
        clearTimeout(timer);
        for (const seq of seqs) this.acks.delete(seq);
        resolve();
      };
      // The timer also keeps the event loop alive while the (unreferenced) socket has replies to deliver.
      const timer = setTimeout(() => {
        for (let j = 0; j < seqs.length; j++) if (this.acks.has(seqs[j] as number)) out[start + j] = 'ETIMEDOUT';
        finish();
        this.drop(sock); // no answer: the socket is suspect, the next batch gets a fresh one
      }, this.timeoutMs);
      seqs.forEach((seq, j) => this.acks.set(seq, (errno) => {
        out[start + j] = errno === 0 ? undefined : errnoName(errno);
        if (--left === 0) finish();
      }));
      sock.socket.socket.send(Buffer.concat(parts), { port: 0 }, (error) => {
        if (error === undefined || error === null) return;
        for (let j = 0; j < seqs.length; j++) if (this.acks.has(seqs[j] as number)) out[start + j] = error.code ?? 'EIO';
        finish();
        this.drop(sock);
      });
    });
  }

  /** Runs one request with the timeout; any failure becomes a KernelError naming `what`. */
  async call<T>(what: string, request: (options: RequestOptions & { flags?: number; localPort?: number }) => Promise<T>, flags = 0): Promise<T> {
    if (this.closed) throw new KernelError('EBADF', what, 'netlink handle closed');
    let sock: RtNetlinkSocket | undefined;
    try {
      sock = this.socket;
      // The port is fixed once the socket is bound; without it the package asks the kernel (getsockname) per request.
      this.port ??= sock.socket.address().port;
      return await request({ timeout: this.timeoutMs, flags, localPort: this.port });
    } catch (err) {
      // The kernel's own answer (EEXIST, ENOENT...) says nothing about the socket; anything else might.
      if (sock !== undefined && !isKernelAnswer(err)) this.drop(sock);
      throw toKernelError(err, what);
    }
  }

  /**
   * A dump request whose messages `parse` turns into T (undefined: skipped). It is re-run (up to 3 times) when the
   * kernel flags it NLM_F_DUMP_INTR: the object list changed while it was being read, so the result may miss or
   * repeat entries.
   */
  dumpWith<T>(what: string, type: number, body: Uint8Array[], parse: (type: number, data: Buffer) => T | undefined): Promise<T[]> {
    const run = this.dumping.then(() => this.dumpNow(what, type, body, parse));
    this.dumping = run.catch(() => undefined);
    return run;
  }

  private async dumpNow<T>(what: string, type: number, body: Uint8Array[], parse: (type: number, data: Buffer) => T | undefined): Promise<T[]> {
    for (let attempt = 1; ; attempt++) {
      const [msgs] = await this.call(what, (o) => this.socket.socket.request(type, body, { ...o, flags: NLM_F_DUMP }));
      let interrupted = false;
      const out: T[] = [];
      for (const msg of msgs) {
        if ((msg.flags & NLM_F_DUMP_INTR) !== 0) interrupted = true;
        if (msg.type === NLMSG_DONE || msg.type === NLMSG_ERROR) continue;
        const parsed = parse(msg.type, msg.data);
        if (parsed !== undefined) out.push(parsed);
      }
      if (!interrupted) return out;
      // Still changing after the retries: a partial view must not be planned from (it could miss objects
      // that exist, and the diff would re-add or delete them). The sync fails and is retried.
      if (attempt >= DUMP_ATTEMPTS) throw new KernelError('EINTR', what, `dump interrupted (NLM_F_DUMP_INTR) ${DUMP_ATTEMPTS} times in a row: the kernel's list kept changing`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const sock = this.current;
    this.current = undefined;
    sock?.socket.close();
    if (sock !== undefined) this.onPort?.(undefined);
  }
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return String(errno);
  }
}

export function openNetlink(options: NetlinkOptions = {}): Netlink {
  return new Netlink(options);
}

/** One write through sendAll; the kernel's error, or no answer in time, is thrown as a KernelError naming `what`. */
export async function sendOne(nl: Netlink, what: string, request: NetlinkRequest): Promise<void> {
  const [code] = await nl.sendAll([request]);
  if (code !== undefined) throw new KernelError(code, what);
}

export function familyOfAf(af: number | undefined): Family | undefined {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  return undefined;
}

export function afOf(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

/** Kernel bytes → canonical address text (IPv6 compressed, lower case). */
export function ipFromBuffer(buf: Buffer): string {
  if (buf.length === 4) return `${buf[0]}.${buf[1]}.${buf[2]}.${buf[3]}`;
  let value = 0n;
  for (const byte of buf) value = (value << 8n) | BigInt(byte);
  return bigIntToIpv6(value);
}

/** Address text (already validated: the core types hold only valid addresses) → kernel bytes. */
export function ipToBuffer(address: string): Buffer {
  // A colon tells the families apart; node's isIPv6 (a large regular expression) was a visible share of a write.
  if (address.includes(':')) {
    const buf = Buffer.alloc(16);
    let value = ipv6ToBigInt(address);
    for (let i = 15; i >= 0; i--) {
      buf[i] = Number(value & 0xffn);
      value >>= 8n;
    }
    return buf;
  }
  const buf = Buffer.allocUnsafe(4);
  let byte = 0;
  let at = 0;
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c === 0x2e) {
      buf[at++] = byte;
      byte = 0;
    } else {
      byte = byte * 10 + c - 0x30;
    }
  }
  buf[at] = byte;
  return buf;
}

/** Splits `a/n` (the core types' CIDR form) into bytes and prefix length. */
export function prefixToBuffer(cidr: string): { addr: Buffer; len: number } {
  const [address = '', len] = cidr.split('/');
  const addr = ipToBuffer(address);
  return { addr, len: len === undefined ? addr.length * 8 : Number(len) };
}

/** The CIDR text of an address + prefix length, in the core types' canonical form. */
export function prefixText(family: Family, buf: Buffer | undefined, len: number): string {
  if (buf === undefined) return family === 4 ? `0.0.0.0/${len}` : `::/${len}`;
  // ipFromBuffer's text is canonical already (IPv6 compressed, lower case).
  return `${ipFromBuffer(buf)}/${len}`;
}
