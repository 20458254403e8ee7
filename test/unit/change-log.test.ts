// The journal lines of a sync's writes (src/daemon/change-log.ts): every change of a small sync at info; a large
// sync as one counted line per ENI and kind at info, each change at trace; fight repairs at debug either way.
import { describe, expect, it } from 'vitest';
import type { Change } from '../../src/core/types';
import { createLogger, type Logger } from '../../src/log';
import { changeVerb, logChanges, PER_CHANGE_LINES_MAX } from '../../src/daemon/change-log';

interface Line { level: number; msg: string; count?: number; iface?: string; action?: string }
const LEVEL = { trace: 10, debug: 20, info: 30 };

function capture(level: string): { log: Logger; lines: () => Line[] } {
  const out: string[] = [];
  const log = createLogger(level, { write: (s: string) => void out.push(s) });
  return { log, lines: () => out.map((s) => JSON.parse(s) as Line) };
}

const rule = (i: number, table: number): Change => ({
  op: 'add-rule', reason: 't',
  rule: { family: 4, priority: 10100, src: `10.0.${table - 10000}.${i}/32`, table, protocol: 236 } as Extract<Change, { op: 'add-rule' }>['rule'],
});
const addr = (i: number, ifindex: number): Change => ({
  op: 'add-address', linkName: `eth${ifindex}`, reason: 't',
  address: { ifindex, family: 4, address: `10.0.${ifindex}.${i}`, prefixLen: 24, noPrefixRoute: true },
});
const fields = (c: Change): Record<string, string | number> => {
  const n = c.op === 'add-rule' ? c.rule.table - 10000 : c.op === 'add-address' ? c.address.ifindex : 0;
  return { action: c.op, iface: `eth${n}`, eni: `eni-${n}` };
};
const never = (): boolean => false;

describe('logChanges', () => {
  it(`up to ${PER_CHANGE_LINES_MAX} changes: one info line each, the ip command`, () => {
    const { log, lines } = capture('info');
    const done = Array.from({ length: PER_CHANGE_LINES_MAX }, (_, i) => rule(i, 10001));
    logChanges(log, done, fields, never);
    expect(lines()).toHaveLength(PER_CHANGE_LINES_MAX);
    expect(lines().every((l) => l.level === LEVEL.info && l.msg.startsWith('ip rule add from 10.0.1.'))).toBe(true);
  });

  it('more: one info line per ENI and kind with the count; every change at trace, none at info', () => {
    const { log, lines } = capture('trace');
    const done = [...Array.from({ length: 40 }, (_, i) => addr(i, 1)), ...Array.from({ length: 40 }, (_, i) => rule(i, 10001)),
      ...Array.from({ length: 3 }, (_, i) => rule(i, 10002))];
    logChanges(log, done, fields, never);
    const info = lines().filter((l) => l.level === LEVEL.info);
    expect(info.map((l) => [l.msg, l.count, l.action, l.iface])).toEqual([
      ['40 × ip address add (eth1, eni-1); each change at log level trace', 40, 'add-address', 'eth1'],
      ['40 × ip rule add (eth1, eni-1); each change at log level trace', 40, 'add-rule', 'eth1'],
      ['3 × ip rule add (eth2, eni-2); each change at log level trace', 3, 'add-rule', 'eth2'],
    ]);
    const trace = lines().filter((l) => l.level === LEVEL.trace).map((l) => l.msg);
    expect(trace).toHaveLength(done.length);
    expect(trace).toContain('ip address add 10.0.1.39/24 dev eth1 noprefixroute');
  });

  it('repairs in a fight: at debug, never at info, and not counted towards the threshold', () => {
    const { log, lines } = capture('debug');
    const fought = rule(99, 10001);
    const done = [fought, ...Array.from({ length: PER_CHANGE_LINES_MAX }, (_, i) => rule(i, 10002))];
    logChanges(log, done, fields, (c) => c === fought);
    expect(lines().filter((l) => l.level === LEVEL.debug).map((l) => l.msg)).toEqual(['ip rule add from 10.0.1.99/32 lookup 10001 pref 10100 proto 236']);
    expect(lines().filter((l) => l.level === LEVEL.info)).toHaveLength(PER_CHANGE_LINES_MAX);
  });

  it('names each kind of change by its ip command', () => {
    const v6: Change = { op: 'add-address', linkName: 'eth1', reason: 't', address: { ifindex: 3, family: 6, address: '2600::1', prefixLen: 128, noPrefixRoute: true } };
    expect(changeVerb(v6)).toBe('ip -6 address add');
    expect(changeVerb(rule(1, 10001))).toBe('ip rule add');
    expect(changeVerb({ op: 'link-up', reason: 't', link: { index: 3, name: 'eth1' } as Extract<Change, { op: 'link-up' }>['link'] })).toBe('ip link set up');
  });
});
