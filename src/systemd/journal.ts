// journald's native protocol (systemd.journal-fields(7), "Native Journal Protocol"): one datagram per
// entry to /run/systemd/journal/socket, `KEY=value\n` per field, or for a value holding a newline
// `KEY\n` + 64-bit little-endian length + bytes + `\n`. Structured fields let operators filter:
// `journalctl -u ec2netd ENI_ID=eni-0abc`, `journalctl -u ec2netd -p warning`.
//
// `journalDestination` is a pino destination: it reads back each JSON line pino writes and sends it as
// one datagram. Sends are synchronous and non-blocking; when journald is gone or busy the entry goes
// to the fallback stream instead, so logging never throws and never stalls the loop.
import { fstatSync } from 'node:fs';
import { sendDatagram } from './notify';

export const JOURNAL_SOCKET = '/run/systemd/journal/socket';
export const SYSLOG_IDENTIFIER = 'ec2netd';

/** pino level number to syslog priority: trace/debug 7, info 6, warn 4, error 3, fatal 2. */
export function priorityOf(level: number): number {
  if (level >= 60) return 2;
  if (level >= 50) return 3;
  if (level >= 40) return 4;
  if (level >= 30) return 6;
  return 7;
}

/** Field names operators filter on; every other key becomes EC2NETD_<KEY>. */
const FIELD_NAMES: Record<string, string> = { eni: 'ENI_ID', iface: 'INTERFACE', table: 'TABLE', action: 'ACTION' };

/** pino's own keys, not copied as fields. */
const PINO_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** A journald field name for a pino key: [A-Z0-9_], not starting with `_` or a digit, at most 64 bytes. */
export function journalFieldName(key: string): string {
  const mapped = FIELD_NAMES[key];
  if (mapped !== undefined) return mapped;
  const upper = key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()
    .replace(/[^A-Z0-9_]/g, '_');
  return `EC2NETD_${upper}`.slice(0, 64);
}

function valueText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
}

function isErrorLike(value: unknown): value is { message: string; stack?: unknown } {
  return typeof value === 'object' && value !== null && typeof (value as { message?: unknown }).message === 'string';
}

/**
 * The human-readable line: the message, then `key=value` for each field, then `: <error message>`
 * (`err` as an Error or a string; left out when the message already says it).
 */
export function humanMessage(entry: Record<string, unknown>): string {
  let text = typeof entry.msg === 'string' ? entry.msg : '';
  let error = '';
  for (const [key, value] of Object.entries(entry)) {
    if (PINO_KEYS.has(key) || value === undefined) continue;
    if (key === 'err' && (isErrorLike(value) || typeof value === 'string')) {
      error = typeof value === 'string' ? value : value.message;
      continue;
    }
    const quote = typeof value === 'string' && (value === '' || /[\s"]/.test(value));
    text += ` ${key}=${quote ? JSON.stringify(value) : valueText(value)}`;
  }
  text = text.trimStart();
  return error === '' || text.includes(error) ? text : `${text}: ${error}`;
}

/** Journal fields of one pino entry (parsed JSON line). */
export function journalFields(entry: Record<string, unknown>): Array<[string, string]> {
  const level = typeof entry.level === 'number' ? entry.level : 30;
  const fields: Array<[string, string]> = [
    ['MESSAGE', humanMessage(entry)],
    ['PRIORITY', String(priorityOf(level))],
    ['SYSLOG_IDENTIFIER', SYSLOG_IDENTIFIER],
  ];
  for (const [key, value] of Object.entries(entry)) {
    if (PINO_KEYS.has(key) || value === undefined || value === null) continue;
    if (key === 'err' && typeof value === 'string') {
      fields.push(['EC2NETD_ERR', value]);
      continue;
    }
    if (key === 'err' && isErrorLike(value)) {
      fields.push(['EC2NETD_ERR', value.message]);
      if (typeof value.stack === 'string') fields.push(['EC2NETD_ERR_STACK', value.stack]);
      continue;
    }
    fields.push([journalFieldName(key), valueText(value)]);
  }
  return fields;
}

/** One native-protocol datagram. */
export function encodeJournalEntry(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    if (value.includes('\n')) {
      const bytes = Buffer.from(value, 'utf8');
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(bytes.length));
      parts.push(Buffer.from(`${name}\n`), length, bytes, Buffer.from('\n'));
    } else {
      parts.push(Buffer.from(`${name}=${value}\n`, 'utf8'));
    }
  }
  return Buffer.concat(parts);
}

/** `<N>message` lines: what journald reads from a stdout stream (sd-daemon(3)). */
export function prefixedLine(entry: Record<string, unknown>): string {
  const level = typeof entry.level === 'number' ? entry.level : 30;
  return `<${priorityOf(level)}>${humanMessage(entry).replace(/\n/g, ' ')}\n`;
}

/** True when `fd` is the stream JOURNAL_STREAM (`dev:ino`) names: systemd connected it to journald. */
export function isJournalStream(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = env.JOURNAL_STREAM;
  if (stream === undefined) return false;
  const match = /^(\d+):(\d+)$/.exec(stream);
  if (match === null) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(match[1] as string) && st.ino === BigInt(match[2] as string);
  } catch {
    return false;
  }
}

export interface Destination {
  write(line: string): void;
}

/**
 * A pino destination sending each entry to journald's native socket. Lines that are not JSON, and
 * entries journald does not take (socket gone, queue full, datagram too large), go to `fallback`
 * (given the original line) — the caller decides its form (`<N>` lines or JSON).
 */
export function journalDestination(fallback: Destination, socketPath: string = JOURNAL_SOCKET): Destination {
  return {
    write(line: string): void {
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        fallback.write(line);
        return;
      }
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        fallback.write(line);
        return;
      }
      const failure = sendDatagram(socketPath, encodeJournalEntry(journalFields(entry as Record<string, unknown>)));
      if (failure !== undefined) fallback.write(line);
    },
  };
}

/** A destination that turns pino's JSON lines into `<N>` lines on `out`. */
export function prefixedDestination(out: Destination): Destination {
  return {
    write(line: string): void {
      try {
        const entry: unknown = JSON.parse(line);
        if (typeof entry === 'object' && entry !== null && !Array.isArray(entry)) {
          out.write(prefixedLine(entry as Record<string, unknown>));
          return;
        }
      } catch {
        // not JSON: pass through
      }
      out.write(line);
    },
  };
}
