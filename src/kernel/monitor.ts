// A monitor child process (`ip monitor`, `nft monitor`) whose lines say that something changed: the generic part
// of the event watchers. It starts the child, waits until it holds a subscribed netlink socket, restarts it
// with backoff when it dies, and turns its output into coalesced 'change' events of the kinds a classifier
// finds in each line. Anything that may have lost events ('lost') means: resync everything.
//
// Events:
//   'change' (kinds: Set<K>)    kinds seen since the last emit, coalesced per event-loop turn
//   'lost'   (reason: string)   events may have been missed
//   'ready'  (pid: number)      a child is running and subscribed
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFile, readdir, readlink } from 'node:fs/promises';

/** Netlink protocol numbers, as in /proc/net/netlink. */
export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;

export interface MonitorOptions {
  /** How long a child may take to subscribe before it counts as failed (default 3000 ms). */
  readyTimeoutMs?: number;
  /** Restart delay after a child exits: base * 2^n up to max (defaults 100 ms and 10 s). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A child that ran this long resets the restart delay (default 30 s). */
  stableMs?: number;
}

/** What a concrete watcher supplies. */
export interface MonitorSpec<K extends string> {
  /** For messages: `ip monitor`. */
  name: string;
  command: string;
  args: string[];
  /** The netlink protocol the child subscribes with (its readiness is checked in /proc). */
  netlinkProtocol: number;
  /** Kinds the watcher reports, one bit each (index = bit number). */
  kinds: readonly K[];
  /** Bits of the kinds that the line buf[start, end) reports (0: none). Called once per line: keep it cheap. */
  classify(buf: Buffer, start: number, end: number): number;
}

const NEWLINE = 0x0a;
/** A line longer than this is classified by its first part only (monitor lines are a few hundred bytes). */
const MAX_CARRY = 4096;

interface Child {
  proc: ChildProcess;
  readyAt?: number;
}

export declare interface MonitorProcess<K extends string> {
  on(event: 'change', listener: (kinds: Set<K>) => void): this;
  on(event: 'lost', listener: (reason: string) => void): this;
  on(event: 'ready', listener: (pid: number) => void): this;
  once(event: 'change', listener: (kinds: Set<K>) => void): this;
  once(event: 'lost', listener: (reason: string) => void): this;
  once(event: 'ready', listener: (pid: number) => void): this;
}

export class MonitorProcess<K extends string> extends EventEmitter {
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
  /** The start of a line that the last chunk ended inside. */
  private carry: Buffer | undefined;

  constructor(private readonly spec: MonitorSpec<K>, options: MonitorOptions = {}) {
    super();
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
    this.carry = undefined;
    const { name } = this.spec;
    const proc = spawn(this.spec.command, this.spec.args, {
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
      if (reason !== '') this.emit('lost', `${name}: ${reason}`);
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
      proc.once('error', (err) => fail(`cannot run ${name}: ${err.message}`));
      proc.once('exit', (code, signal) => fail(`${name} exited (${signal ?? `code ${code ?? '?'}`})`));
      proc.once('spawn', () => {
        const pid = proc.pid;
        if (pid === undefined) return;
        waitSubscribed(pid, this.spec.netlinkProtocol, this.readyTimeoutMs, () => this.child === child).then((ok) => {
          if (settled) return;
          if (this.child !== child) {
            fail(`${name}: stopped before it subscribed`);
            return;
          }
          if (!ok) {
            fail(`${name} (pid ${pid}) did not subscribe within ${this.readyTimeoutMs} ms`);
            return;
          }
          settled = true;
          child.readyAt = Date.now();
          this.emit('ready', pid);
          resolve();
        }, (err: unknown) => fail(`${name}: ${(err as Error).message}`));
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
        () => { if (this.running) this.emit('lost', `${this.spec.name} restarted: changes made while it was down were not seen`); },
        (err: unknown) => { if (this.running) this.scheduleRestart((err as Error).message, { proc: dead.proc }); },
      );
    }, delay);
  }

  /** Splits the output into lines and classifies each; a storm costs one indexOf and one classify per line. */
  private onData(chunk: Buffer): void {
    let buf = chunk;
    if (this.carry !== undefined) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = undefined;
    }
    let pos = 0;
    let seen = 0;
    for (;;) {
      const end = buf.indexOf(NEWLINE, pos);
      if (end < 0) break;
      seen |= this.spec.classify(buf, pos, end);
      pos = end + 1;
    }
    if (pos < buf.length) {
      // An overlong line is classified by its start; the rest of it is dropped up to its newline.
      if (buf.length - pos > MAX_CARRY) seen |= this.spec.classify(buf, pos, buf.length);
      else this.carry = Buffer.from(buf.subarray(pos));
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
    const kinds = new Set<K>(this.spec.kinds.filter((_, i) => (bits & (1 << i)) !== 0));
    this.emit('change', kinds);
  }
}

/**
 * Waits until process `pid` holds a netlink socket of `protocol` bound to multicast groups, read from
 * /proc/PID/net/netlink (the sockets of its namespace: protocol, groups, inode) and /proc/PID/fd (its socket
 * inodes). Writes nothing to the kernel (a probe change would be a write the daemon must not make) and does not
 * depend on output, which may never come on a quiet host. `ip monitor` first opens a socket without groups,
 * closes it and opens the subscribed one, so the check looks for a group mask, not just a socket.
 */
async function waitSubscribed(pid: number, protocol: number, timeoutMs: number, stillWanted: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && stillWanted()) {
    if (await isSubscribed(pid, protocol)) return true;
    await new Promise((r) => setTimeout(r, 2));
  }
  return false;
}

async function isSubscribed(pid: number, protocol: number): Promise<boolean> {
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
      if (f.length >= 10 && f[1] === String(protocol) && f[3] !== undefined && /[1-9a-f]/.test(f[3]) && inodes.has(f[9] ?? '')) return true;
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
