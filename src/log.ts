// Logging: one JSON object a line, in pino's format (`level` 10–60, `time` ISO, the fields, `msg`), written by
// hand instead of with pino: loading pino (29 modules, a worker-thread transport we never use) cost ~9 MB resident
// and ~30 ms of start-up, a sixth of the memory goal (docs/performance.md); what ec2netd needs is levels, flat
// fields and a synchronous write. Operators filter on these field names (src/systemd/journal.ts maps them to
// journald fields ENI_ID, INTERFACE, TABLE, ACTION): eni, iface, table, action.
//
// Where the lines go (logTarget):
// - `journal`: under systemd with journald's socket present (stdout is the journal stream, or
//   INVOCATION_ID is set and stdout is not a terminal): native protocol, structured fields; an entry
//   journald does not take falls back to stdout.
// - `prefixed`: stdout is the journal stream but the native socket is missing: `<N>message` lines.
// - `json`: anything else (a terminal, a file, tests): JSON lines on stdout.
import { statSync } from 'node:fs';
import { isatty } from 'node:tty';
import { writeSync } from 'node:fs';
import { isJournalStream, journalDestination, JOURNAL_SOCKET, prefixedDestination, type Destination } from './systemd/journal';

export const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
export type Level = keyof typeof LEVELS;
export type Fields = Record<string, unknown>;

function levelValue(level: string): number {
  return level === 'silent' ? Infinity : (LEVELS as Record<string, number | undefined>)[level] ?? LEVELS.info;
}

/** The JSON text of the fields without braces ('' for none). An Error becomes its type, message and stack
 * (JSON.stringify would give `{}`); a field JSON cannot hold (a cycle, a BigInt) becomes its String(). */
function fieldsText(fields: Fields): string {
  let plain = fields;
  for (const key in fields) {
    const value = fields[key];
    if (value instanceof Error) plain = { ...plain, [key]: { type: value.name, message: value.message, stack: value.stack } };
  }
  let text: string;
  try {
    text = JSON.stringify(plain);
  } catch {
    const safe: Fields = {};
    for (const [key, value] of Object.entries(plain)) {
      try {
        JSON.stringify(value);
        safe[key] = value;
      } catch {
        safe[key] = String(value);
      }
    }
    text = JSON.stringify(safe);
  }
  return text.length > 2 ? text.slice(1, -1) : '';
}

type LogMethod = (fieldsOrMsg: Fields | string, msg?: string) => void;

export class Logger {
  private threshold: number;
  private name: string;

  constructor(level: string, private readonly destination: Destination) {
    this.name = level;
    this.threshold = levelValue(level);
  }

  get level(): string {
    return this.name;
  }

  set level(level: string) {
    this.name = level;
    this.threshold = levelValue(level);
  }

  isLevelEnabled(level: Level): boolean {
    return LEVELS[level] >= this.threshold;
  }

  readonly trace: LogMethod = (a, b) => this.write(LEVELS.trace, a, b);
  readonly debug: LogMethod = (a, b) => this.write(LEVELS.debug, a, b);
  readonly info: LogMethod = (a, b) => this.write(LEVELS.info, a, b);
  readonly warn: LogMethod = (a, b) => this.write(LEVELS.warn, a, b);
  readonly error: LogMethod = (a, b) => this.write(LEVELS.error, a, b);
  readonly fatal: LogMethod = (a, b) => this.write(LEVELS.fatal, a, b);

  private write(level: number, a: Fields | string, b: string | undefined): void {
    if (level < this.threshold) return;
    const fields = typeof a === 'string' ? '' : fieldsText(a);
    const msg = typeof a === 'string' ? a : b;
    let line = `{"level":${level},"time":"${isoTime(Date.now())}"`;
    if (fields !== '') line += `,${fields}`;
    if (msg !== undefined) line += `,"msg":${JSON.stringify(msg)}`;
    this.destination.write(`${line}}\n`);
  }
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');

/**
 * `Date.prototype.toISOString` of `ms`, spelled out from the UTC fields: the built-in's first call initialises V8's
 * date cache through ICU's time zone data, 0.7 MB of the node binary resident for the rest of the daemon's life
 * (docs/performance.md), to print a UTC time. Years outside 0..9999 (never a clock's) go to the built-in.
 */
export function isoTime(ms: number): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) return d.toISOString();
  return `${pad(year, 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}T${pad(d.getUTCHours(), 2)}:` +
    `${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${pad(d.getUTCMilliseconds(), 3)}Z`;
}

/**
 * Standard output, written synchronously (a line is in the journal or the pipe before the next statement: a crash
 * loses nothing); a non-blocking pipe that is full is retried after 1 ms, as pino's sonic-boom does.
 */
export function stdoutDestination(fd = 1): Destination {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  return {
    write(line: string): void {
      let buf = Buffer.from(line);
      for (let tries = 0; buf.length > 0; ) {
        try {
          buf = buf.subarray(writeSync(fd, buf));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || ++tries > 1000) return;
          Atomics.wait(pause, 0, 0, 1);
        }
      }
    },
  };
}
export type LogTarget = 'journal' | 'prefixed' | 'json';

export interface LogEnvironment {
  env?: NodeJS.ProcessEnv;
  journalSocket?: string;
  /** The fd checked against JOURNAL_STREAM; 1 (stdout). */
  fd?: number;
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

export function logTarget(where: LogEnvironment = {}): LogTarget {
  const env = where.env ?? process.env;
  const fd = where.fd ?? 1;
  const stream = isJournalStream(fd, env);
  const underSystemd = stream || (env.INVOCATION_ID !== undefined && env.INVOCATION_ID !== '' && !isatty(fd));
  if (underSystemd && isSocket(where.journalSocket ?? JOURNAL_SOCKET)) return 'journal';
  return stream ? 'prefixed' : 'json';
}

/** The destination for a target: journald's socket, or `out` (stdout) in `<N>` or JSON form. */
export function logDestination(target: LogTarget, out: Destination, journalSocket: string = JOURNAL_SOCKET): Destination {
  switch (target) {
    case 'journal':
      return journalDestination(out, journalSocket);
    case 'prefixed':
      return prefixedDestination(out);
    case 'json':
      return out;
  }
}

/**
 * The process logger. With an explicit destination, plain JSON lines go there; without one the
 * destination follows logTarget() (journald when running as a systemd service).
 */
export function createLogger(level: string = 'info', destination?: Destination): Logger {
  if (destination !== undefined) return new Logger(level, destination);
  const out = stdoutDestination();
  const target = logTarget();
  if (target === 'json') return new Logger(level, out);
  return new Logger(level, logDestination(target, target === 'journal' && isJournalStream(1) ? prefixedDestination(out) : out));
}

/** A logger that drops everything: for library calls from tests and one-shot CLI commands. */
export function silentLogger(): Logger {
  return new Logger('silent', { write: () => undefined });
}
