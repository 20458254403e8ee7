import { closeSync, mkdtempSync, openSync, fstatSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket, type UnixDgramSocket } from 'unix-dgram';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger, logDestination, logTarget } from '../../src/log';
import { encodeJournalEntry, journalFieldName, journalFields, prefixedLine, priorityOf } from '../../src/systemd/journal';

/** Decodes a native-protocol datagram (both field forms) the way journald does. */
function decode(buf: Buffer): Array<[string, string]> {
  const fields: Array<[string, string]> = [];
  let at = 0;
  while (at < buf.length) {
    const nl = buf.indexOf(0x0a, at);
    const line = buf.subarray(at, nl).toString();
    const eq = line.indexOf('=');
    if (eq >= 0) {
      fields.push([line.slice(0, eq), line.slice(eq + 1)]);
      at = nl + 1;
    } else {
      const length = Number(buf.readBigUInt64LE(nl + 1));
      const start = nl + 9;
      fields.push([line, buf.subarray(start, start + length).toString()]);
      expect(buf[start + length]).toBe(0x0a);
      at = start + length + 1;
    }
  }
  return fields;
}

describe('journald native protocol', () => {
  it('encodes simple fields as KEY=value lines', () => {
    expect(encodeJournalEntry([['MESSAGE', 'hello'], ['PRIORITY', '6']]).toString()).toBe('MESSAGE=hello\nPRIORITY=6\n');
  });

  it('encodes values with newlines length-prefixed, binary-safe', () => {
    const buf = encodeJournalEntry([['EC2NETD_ERR_STACK', 'Error: x\n    at y ü'], ['PRIORITY', '3']]);
    const header = Buffer.from('EC2NETD_ERR_STACK\n');
    expect(buf.subarray(0, header.length)).toEqual(header);
    expect(buf.readBigUInt64LE(header.length)).toBe(BigInt(Buffer.byteLength('Error: x\n    at y ü')));
    expect(decode(buf)).toEqual([['EC2NETD_ERR_STACK', 'Error: x\n    at y ü'], ['PRIORITY', '3']]);
  });

  it('maps the log levels to syslog priorities', () => {
    expect([10, 20, 30, 40, 50, 60].map(priorityOf)).toEqual([7, 7, 6, 4, 3, 2]);
  });

  it('maps field names', () => {
    expect(['eni', 'iface', 'table', 'action', 'addressCount', 'ip-6', 'x'].map(journalFieldName))
      .toEqual(['ENI_ID', 'INTERFACE', 'TABLE', 'ACTION', 'EC2NETD_ADDRESS_COUNT', 'EC2NETD_IP_6', 'EC2NETD_X']);
    for (const name of ['eni', '_secret', '9lives', 'ünïcode'].map(journalFieldName)) expect(name).toMatch(/^[A-Z][A-Z0-9_]{0,63}$/);
  });

  it('builds MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the data fields from a log entry', () => {
    const fields = journalFields({ level: 40, time: 'x', msg: 'rule add failed', eni: 'eni-0abc', table: 10001, detail: { a: 1 },
      err: { type: 'Error', message: 'EEXIST', stack: 'Error: EEXIST\n  at f' } });
    expect(fields).toEqual([
      ['MESSAGE', 'rule add failed eni=eni-0abc table=10001 detail={"a":1}: EEXIST'],
      ['PRIORITY', '4'],
      ['SYSLOG_IDENTIFIER', 'ec2netd'],
      ['ENI_ID', 'eni-0abc'],
      ['TABLE', '10001'],
      ['EC2NETD_DETAIL', '{"a":1}'],
      ['EC2NETD_ERR', 'EEXIST'],
      ['EC2NETD_ERR_STACK', 'Error: EEXIST\n  at f'],
    ]);
  });

  it('appends a string err to MESSAGE unless the message already holds it', () => {
    expect(journalFields({ level: 50, msg: 'IMDS failed: timeout', err: 'timeout' }).slice(0, 1)).toEqual([['MESSAGE', 'IMDS failed: timeout']]);
    expect(journalFields({ level: 50, msg: 'IMDS failed', err: 'timeout' })).toContainEqual(['MESSAGE', 'IMDS failed: timeout']);
    expect(journalFields({ level: 50, msg: 'IMDS failed', err: 'timeout' })).toContainEqual(['EC2NETD_ERR', 'timeout']);
  });

  it('writes <N> lines for a journal stream', () => {
    expect(prefixedLine({ level: 50, msg: 'imds down', iface: 'eth1' })).toBe('<3>imds down iface=eth1\n');
  });
});

describe('logger destinations', () => {
  let dir: string;
  let socketPath: string;
  let receiver: UnixDgramSocket;
  let datagrams: Buffer[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ec2netd-log-'));
    socketPath = join(dir, 'journal.socket');
    datagrams = [];
    receiver = createSocket('unix_dgram', (msg) => datagrams.push(msg));
    receiver.bind(socketPath);
  });
  afterEach(() => {
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends log entries as native datagrams', async () => {
    const fallback: string[] = [];
    const log = createLogger('debug', logDestination('journal', { write: (l) => void fallback.push(l) }, socketPath));
    log.info({ eni: 'eni-1', iface: 'eth1', action: 'add' }, 'multi\nline');
    log.debug('dbg');
    const deadline = Date.now() + 2000;
    while (datagrams.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const first = new Map(decode(datagrams[0] ?? Buffer.alloc(0)));
    expect(first.get('MESSAGE')).toBe('multi\nline eni=eni-1 iface=eth1 action=add');
    expect(first.get('PRIORITY')).toBe('6');
    expect(first.get('ENI_ID')).toBe('eni-1');
    expect(first.get('INTERFACE')).toBe('eth1');
    expect(first.get('ACTION')).toBe('add');
    expect(new Map(decode(datagrams[1] ?? Buffer.alloc(0))).get('PRIORITY')).toBe('7');
    expect(fallback).toEqual([]);
  });

  it('falls back to the stream when journald is gone, without throwing', () => {
    const fallback: string[] = [];
    const log = createLogger('info', logDestination('journal', { write: (l) => void fallback.push(l) }, join(dir, 'gone')));
    log.warn({ eni: 'eni-1' }, 'still logged');
    expect(fallback).toHaveLength(1);
    expect(JSON.parse(fallback[0] ?? '{}')).toMatchObject({ level: 40, msg: 'still logged', eni: 'eni-1' });
  });

  it('chooses the target from JOURNAL_STREAM, INVOCATION_ID and the socket', () => {
    const file = join(dir, 'stdout');
    const fd = openSync(file, 'w');
    try {
      const st = fstatSync(fd);
      const stream = `${st.dev}:${st.ino}`;
      expect(logTarget({ env: { JOURNAL_STREAM: stream }, fd, journalSocket: socketPath })).toBe('journal');
      expect(logTarget({ env: { JOURNAL_STREAM: stream }, fd, journalSocket: join(dir, 'gone') })).toBe('prefixed');
      expect(logTarget({ env: { JOURNAL_STREAM: '1:2' }, fd, journalSocket: socketPath })).toBe('json');
      expect(logTarget({ env: { INVOCATION_ID: 'abc' }, fd, journalSocket: socketPath })).toBe('journal');
      expect(logTarget({ env: {}, fd, journalSocket: socketPath })).toBe('json');
    } finally {
      closeSync(fd);
    }
  });
});
