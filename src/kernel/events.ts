// The kernel event watcher: which kinds of objects changed, never what changed (the sync re-reads them).
//
// Why a child process (`ip -o monitor label link address route rule`) and not a subscribed netlink socket in
// this process: the `netlink` package aborts the whole process with SIGABRT, which no JS handler can catch,
// when a subscribed socket overruns (docs/dependencies.md). `ip monitor` is a tiny, well-kept program that opens
// its socket with a 1 MB receive buffer, and on ENOBUFS prints "netlink receive error No buffer space available"
// to stderr and carries on (iproute2 lib/libnetlink.c, rtnl_listen). So the worst an overrun or a crash of the
// watcher can do is lose events, which is reported as 'lost' and turned into a full resync by the daemon.
//
// Events:
//   'change' (kinds: Set<ObjectKind>)  object kinds seen since the last emit, coalesced per event-loop turn
//   'lost'   (reason: string)          events may have been missed: resync everything
//   'ready'  (pid: number)             a watcher child is running and subscribed
//
// Output of iproute2 6.1 with `-o` and `label` (verified): one line per message, starting with the object tag,
// `Deleted ` follows it for deletions:
//   [ADDR]3: v0    inet 10.0.1.6/24 scope global secondary v0\       valid_lft forever ...
//   [ROUTE]Deleted 10.9.0.0/16 via 10.0.1.1 dev v0 table 10001 proto 236
//   [RULE]10050:	from all to 10.9.0.0/16 lookup 10001 proto 236
//   [LINK]2: v1@v0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ...
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFile, readdir, readlink } from 'node:fs/promises';
import type { ObjectKind } from './observe';

export interface KernelEventsOptions {
  /** The `ip` program (default: `ip` from PATH). */
  ipPath?: string;
  /** How long a child may take to subscribe before it counts as failed (default 3000 ms). */
  readyTimeoutMs?: number;
  /** Restart delay after a child exits: base * 2^n up to max (defaults 100 ms and 10 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A child that ran this long resets the restart delay (default 30 s). */
  stableMs?: number;
}

const LINK = 1;
const ADDRESS = 2;
const ROUTE = 4;
const RULE = 8;
const BRACKET = 0x5b; // [
const NEWLINE = 0x0a;

interface Child {
  proc: ChildProcess;
  readyAt?: number;
}

export declare interface KernelEvents {
  on(event: 'change', listener: (kinds: Set<ObjectKind>) => void): this;
  on(event: 'lost', listener: (reason: string) => void): this;
  on(event: 'ready', listener: (pid: number) => void): this;
  once(event: 'change', listener: (kinds: Set<ObjectKind>) => void): this;
  once(event: 'lost', listener: (reason: string) => void): this;
  once(event: 'ready', listener: (pid: number) => void): this;
}

export class KernelEvents extends EventEmitter {
  private readonly ipPath: string;
  private readonly readyTimeoutMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly stableMs: number;
  private running = false;
  private child: Child | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private restarts = 0;
  /** Kinds seen since the last 'change' (bit set), and whether an emit is scheduled. */
  private pending = 0;
  private scheduled = false;
  private atLineStart = true;
  private carry: Buffer | undefined;

  constructor(options: KernelEventsOptions = {}) {
    super();
    this.ipPath = options.ipPath ?? 'ip';
    this.readyTimeoutMs = options.readyTimeoutMs ?? 3000;
    this.backoffBaseMs = options.backoffBaseMs ?? 100;
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000;
    this.stableMs = options.stableMs ?? 30_000;
  }

  /** The pid of the current watcher child, if one runs. */
  get pid(): number | undefined {
    return this.child?.proc.pid;
  }

  /**
   * Starts the watcher; resolves once the first child is subscribed. Rejects (and stops) when that first child
   * cannot start or subscribe; later failures are 'lost' events and restarts, never exceptions.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await this.launch();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stops the child and every timer; no event is emitted afterwards. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    this.child = undefined;
    this.pending = 0;
    if (child !== undefined) await terminate(child.proc);
  }

  private launch(): Promise<void> {
    this.atLineStart = true;
    this.carry = undefined;
    const proc = spawn(this.ipPath, ['-o', 'monitor', 'label', 'link', 'address', 'route', 'rule'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    const child: Child = { proc };
    this.child = child;
    const current = (): boolean => this.child === child && this.running;
    proc.stdout?.on('data', (chunk: Buffer) => { if (current()) this.onData(chunk); });
    proc.stdout?.on('error', () => undefined);
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (text: string) => {
      if (!current()) return;
      // e.g. "netlink receive error No buffer space available (105)": the child goes on, events were dropped.
      const reason = text.trim().split('\n')[0] ?? '';
      if (reason !== '') this.emit('lost', `ip monitor: ${reason}`);
    });
    proc.stderr?.on('error', () => undefined);

    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (reason: string): void => {
        const wasCurrent = this.child === child;
        if (wasCurrent) {
          this.child = undefined;
          proc.kill('SIGKILL');
        }
        if (!settled) {
          settled = true;
          reject(new Error(reason));
          return;
        }
        if (wasCurrent && this.running) this.scheduleRestart(reason, child);
      };
      proc.once('error', (err) => fail(`cannot run ${this.ipPath} monitor: ${err.message}`));
      proc.once('exit', (code, signal) => fail(`ip monitor exited (${signal ?? `code ${code ?? '?'}`})`));
      proc.once('spawn', () => {
        const pid = proc.pid;
        if (pid === undefined) return;
        waitSubscribed(pid, this.readyTimeoutMs, () => this.child === child).then((ok) => {
          if (settled) return;
          if (this.child !== child) {
            fail('ip monitor: stopped before it subscribed');
            return;
          }
          if (!ok) {
            fail(`ip monitor (pid ${pid}) did not subscribe within ${this.readyTimeoutMs} ms`);
            return;
          }
          settled = true;
          child.readyAt = Date.now();
          this.emit('ready', pid);
          resolve();
        }, (err: unknown) => fail(`ip monitor: ${(err as Error).message}`));
      });
    });
  }

  private scheduleRestart(reason: string, dead: Child): void {
    if (dead.readyAt !== undefined && Date.now() - dead.readyAt >= this.stableMs) this.restarts = 0;
    const delay = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** this.restarts);
    this.restarts++;
    this.emit('lost', `${reason}; restarting in ${delay} ms`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.running) return;
      // A restart is only done once the new child is subscribed; changes made while no child listened are
      // covered by a second 'lost', emitted after the subscription, so the resync it causes sees them.
      this.launch().then(
        () => { if (this.running) this.emit('lost', 'ip monitor restarted: changes made while it was down were not seen'); },
        (err: unknown) => { if (this.running) this.scheduleRestart((err as Error).message, { proc: dead.proc }); },
      );
    }, delay);
  }

  /**
   * Classifies each line by its first bytes. A storm of lines costs one indexOf per line and no allocation
   * (except a few bytes carried over when a chunk ends inside a line's tag).
   */
  private onData(chunk: Buffer): void {
    let buf = chunk;
    if (this.carry !== undefined) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    const len = buf.length;
    let pos = 0;
    let seen = 0;
    while (pos < len) {
      if (this.atLineStart) {
        if (len - pos < 3 && buf.indexOf(NEWLINE, pos) < 0) {
          this.carry = Buffer.from(buf.subarray(pos));
          break;
        }
        if (buf[pos] === BRACKET) {
          const c = buf[pos + 1];
          if (c === 0x4c) seen |= LINK; // [LINK]
          else if (c === 0x41) seen |= ADDRESS; // [ADDR]
          else if (c === 0x52) seen |= buf[pos + 2] === 0x55 ? RULE : ROUTE; // [RULE] / [ROUTE]
        }
      }
      const end = buf.indexOf(NEWLINE, pos);
      if (end < 0) {
        this.atLineStart = false;
        break;
      }
      this.atLineStart = true;
      pos = end + 1;
    }
    if (seen === 0) return;
    this.pending |= seen;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    const bits = this.pending;
    this.pending = 0;
    if (bits === 0 || !this.running) return;
    const kinds = new Set<ObjectKind>();
    if ((bits & LINK) !== 0) kinds.add('link');
    if ((bits & ADDRESS) !== 0) kinds.add('address');
    if ((bits & ROUTE) !== 0) kinds.add('route');
    if ((bits & RULE) !== 0) kinds.add('rule');
    this.emit('change', kinds);
  }
}

/**
 * Waits until process `pid` holds a NETLINK_ROUTE socket bound to multicast groups, read from
 * /proc/PID/net/netlink (the sockets of its namespace: protocol, groups, inode) and /proc/PID/fd (its socket
 * inodes). Writes nothing to the kernel (a probe change would be a write the daemon must not make) and does not
 * depend on output, which may never come on a quiet host. `ip monitor` first opens a socket without groups,
 * closes it and opens the subscribed one, so the check looks for a group mask, not just a socket.
 */
async function waitSubscribed(pid: number, timeoutMs: number, stillWanted: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && stillWanted()) {
    if (await isSubscribed(pid)) return true;
    await new Promise((r) => setTimeout(r, 2));
  }
  return false;
}

async function isSubscribed(pid: number): Promise<boolean> {
  try {
    const inodes = new Set<string>();
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m?.[1] !== undefined) inodes.add(m[1]);
    }
    if (inodes.size === 0) return false;
    const table = await readFile(`/proc/${pid}/net/netlink`, 'utf8');
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    for (const line of table.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 10 && f[1] === '0' && f[3] !== undefined && /[1-9a-f]/.test(f[3]) && inodes.has(f[9] ?? '')) return true;
    }
    return false;
  } catch {
    return false; // the process is gone or not readable yet
  }
}

function terminate(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => proc.kill('SIGKILL'), 1000);
    proc.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}
