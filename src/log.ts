// Logging: pino, one JSON object a line. Operators filter on these field names
// (src/systemd/journal.ts maps them to journald fields ENI_ID, INTERFACE, TABLE, ACTION): eni, iface, table, action.
//
// Where the lines go (logTarget):
// - `journal`: under systemd with journald's socket present (stdout is the journal stream, or
//   INVOCATION_ID is set and stdout is not a terminal): native protocol, structured fields; an entry
//   journald does not take falls back to stdout.
// - `prefixed`: stdout is the journal stream but the native socket is missing: `<N>message` lines.
// - `json`: anything else (a terminal, a file, tests): pino's JSON lines on stdout.
import { statSync } from 'node:fs';
import { isatty } from 'node:tty';
import pino from 'pino';
import { isJournalStream, journalDestination, JOURNAL_SOCKET, prefixedDestination, type Destination } from './systemd/journal';

export type Logger = pino.Logger;
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
export function createLogger(level: string = 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination !== undefined) return pino(options, destination);
  const stdout = pino.destination(1);
  const target = logTarget();
  if (target === 'json') return pino(options, stdout);
  const out: Destination = { write: (line) => void stdout.write(line) };
  return pino(options, logDestination(target, target === 'journal' && isJournalStream(1) ? prefixedDestination(out) : out));
}

/** A logger that drops everything: for library calls from tests and one-shot CLI commands. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
