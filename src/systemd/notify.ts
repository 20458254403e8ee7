// sd_notify(3) from the main PID, over the datagram socket systemd names in NOTIFY_SOCKET.
//
// The unit uses NotifyAccess=main, so every message must come from this process: no helper binary
// (see docs/dependencies.md). Each message opens a socket, sends one datagram and closes it, as
// sd_notify does, so an idle notifier holds no handle that keeps a one-shot command alive.
//
// Without NOTIFY_SOCKET (a terminal, tests, `ec2netd sync`) every call is a no-op. Abstract socket
// names (`@...`) cannot be reached through unix-dgram; that is reported once and then ignored: systemd
// itself always passes a path (/run/systemd/notify), abstract names come from other supervisors.
import { createSocket } from 'unix-dgram';

/** What the daemon tells systemd. A fake (see `recordingNotifier`) stands in for it in tests. */
export interface Notifier {
  /** True when messages go to a supervisor; false for the no-op notifier. */
  readonly enabled: boolean;
  /** READY=1, with a STATUS line. Also ends a reload (RELOADING=1 ... READY=1). */
  ready(status?: string): void;
  /** STATUS=..., shown by `systemctl status`. */
  status(text: string): void;
  /** RELOADING=1 with MONOTONIC_USEC: a reload (SIGHUP) started; send ready() when it is done. */
  reloading(status?: string): void;
  /** WATCHDOG=1: call every watchdogIntervalMs() from the loop that must stay alive. */
  watchdog(): void;
  /** STOPPING=1: shutdown started. */
  stopping(status?: string): void;
  /** Half the watchdog period in ms (from WATCHDOG_USEC/WATCHDOG_PID), or undefined: no pings expected. */
  watchdogIntervalMs(): number | undefined;
}

/**
 * CLOCK_MONOTONIC in microseconds, as systemd expects in MONOTONIC_USEC.
 * process.hrtime.bigint() is libuv's uv_hrtime(), which on Linux is clock_gettime(CLOCK_MONOTONIC)
 * (src/unix/linux.c, uv__hrtime with UV_CLOCK_PRECISE). Node documents only "an arbitrary time in
 * the past"; test/unit/systemd-notify.test.ts checks the epoch against python's CLOCK_MONOTONIC.
 */
export function monotonicUsec(): bigint {
  return process.hrtime.bigint() / 1000n;
}

/** `KEY=value` lines of one notify datagram. Newlines in a value would start a new field: replaced. */
export function formatNotify(fields: ReadonlyArray<readonly [string, string]>): string {
  return fields.map(([key, value]) => `${key}=${value.replace(/\n/g, ' ')}`).join('\n');
}

/**
 * Watchdog ping interval in ms, or undefined when systemd does not expect pings (WatchdogSec= unset,
 * or WATCHDOG_PID names another process). Half the period, as sd_watchdog_enabled(3) recommends.
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): number | undefined {
  const usecText = env.WATCHDOG_USEC;
  if (usecText === undefined || !/^[0-9]+$/.test(usecText)) return undefined;
  const usec = Number(usecText);
  if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
  const pidText = env.WATCHDOG_PID;
  if (pidText !== undefined && pidText !== '' && Number(pidText) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

/** Why NOTIFY_SOCKET cannot be used, or undefined when it can. */
export function notifySocketProblem(path: string): string | undefined {
  if (path.startsWith('@')) return `NOTIFY_SOCKET=${path} is an abstract socket, which unix-dgram cannot reach; notifications are disabled`;
  if (!path.startsWith('/')) return `NOTIFY_SOCKET=${path} is not an absolute path; notifications are disabled`;
  if (Buffer.byteLength(path) > 107) return `NOTIFY_SOCKET=${path} is longer than a unix socket path may be; notifications are disabled`;
  return undefined;
}

/**
 * Sends one datagram to a unix socket path. Never throws; returns the error text on failure.
 * Sockets are non-blocking: a full queue is an error (EAGAIN), not a wait.
 */
export function sendDatagram(path: string, payload: Buffer): string | undefined {
  let failure: string | undefined;
  try {
    const socket = createSocket('unix_dgram');
    socket.on('error', (err: Error) => {
      failure = err.message;
    });
    try {
      socket.send(payload, 0, payload.length, path, (err) => {
        if (err !== undefined && err !== null) failure = `send ${errnoName(err.errno)}`;
      });
    } finally {
      socket.close();
    }
  } catch (err) {
    failure = (err as Error).message;
  }
  return failure;
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 11: 'EAGAIN', 13: 'EACCES', 90: 'EMSGSIZE', 105: 'ENOBUFS', 107: 'ENOTCONN', 111: 'ECONNREFUSED' };

function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return ERRNO_NAMES[n] ?? `errno ${n}`;
}

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  /** Called (at most once per distinct problem) when a message cannot be delivered. */
  onWarning?: (message: string) => void;
}

/** The notifier for this process: real when NOTIFY_SOCKET names a usable path, else a no-op. */
export function createNotifier(options: NotifierOptions = {}): Notifier {
  const env = options.env ?? process.env;
  const warned = new Set<string>();
  const warn = (message: string): void => {
    if (warned.has(message)) return;
    warned.add(message);
    options.onWarning?.(message);
  };
  const path = env.NOTIFY_SOCKET;
  if (path === undefined || path === '') return noopNotifier();
  const problem = notifySocketProblem(path);
  if (problem !== undefined) {
    warn(problem);
    return noopNotifier();
  }
  const interval = watchdogIntervalMs(env);
  return fieldsNotifier((fields) => {
    const failure = sendDatagram(path, Buffer.from(formatNotify(fields)));
    if (failure !== undefined) warn(`sd_notify to ${path} failed: ${failure}`);
  }, true, interval);
}

type Fields = Array<[string, string]>;

function withStatus(fields: Fields, status: string | undefined): Fields {
  return status === undefined ? fields : [...fields, ['STATUS', status]];
}

/** A Notifier that hands each message's fields to `send`. */
export function fieldsNotifier(send: (fields: Fields) => void, enabled = true, watchdogMs?: number): Notifier {
  return {
    enabled,
    watchdogIntervalMs: () => watchdogMs,
    ready: (status) => send(withStatus([['READY', '1']], status)),
    status: (text) => send([['STATUS', text]]),
    reloading: (status) => send(withStatus([['RELOADING', '1'], ['MONOTONIC_USEC', monotonicUsec().toString()]], status)),
    watchdog: () => send([['WATCHDOG', '1']]),
    stopping: (status) => send(withStatus([['STOPPING', '1']], status)),
  };
}

export function noopNotifier(): Notifier {
  return fieldsNotifier(() => undefined, false);
}

/** A fake for daemon tests: records every message as its `KEY=value` text. */
export function recordingNotifier(watchdogMs?: number): Notifier & { messages: string[] } {
  const messages: string[] = [];
  return Object.assign(fieldsNotifier((fields) => messages.push(formatNotify(fields)), true, watchdogMs), { messages });
}
