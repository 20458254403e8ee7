import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockedDeletions, isDeletion, subjectsOf } from '../../src/core/dependencies';
import type { Change, KernelRoute, KernelRule } from '../../src/core/types';

const rule = (src: string, table: number, priority = 10100): KernelRule => ({ family: 4, priority, table, protocol: 236, action: 1, src });
const route = (table: number, dst = '0.0.0.0/0'): KernelRoute => ({ family: 4, table, dst, protocol: 236, scope: 0, type: 1, gateway: '10.0.1.1', ifindex: 3 });
const addRule = (src: string, table: number): Change => ({ op: 'add-rule', rule: rule(src, table), reason: 't' });
const delRule = (src: string, table: number): Change => ({ op: 'del-rule', rule: rule(src, table), reason: 't' });
const addRoute = (table: number, dst?: string): Change => ({ op: 'add-route', route: route(table, dst), reason: 't' });
const delRoute = (table: number, dst?: string): Change => ({ op: 'del-route', route: route(table, dst), reason: 't' });
const addAddr = (ifindex: number, address: string): Change => ({ op: 'add-address', address: { ifindex, family: address.includes(':') ? 6 : 4, address, prefixLen: 24, noPrefixRoute: true }, linkName: `if${ifindex}`, reason: 't' });
const delAddr = (ifindex: number, address: string): Change => ({ op: 'del-address', address: { ifindex, family: 4, address, prefixLen: 24 }, linkName: `if${ifindex}`, reason: 't' });

describe('blockedDeletions', () => {
  it('an IP moving between tables keeps its old rule, and the old table its routes, when the new path fails', () => {
    const failedRoute = addRoute(10002);
    const plan = [addAddr(4, '10.0.1.40'), failedRoute, addRule('10.0.1.40/32', 10002), delRule('10.0.1.40/32', 10001), delRoute(10001, '10.9.0.0/16'), delAddr(3, '10.0.1.40')];
    const blocked = blockedDeletions(plan, new Set([failedRoute]));
    expect([...blocked]).toEqual(plan.filter(isDeletion));
  });

  it('a refused IPv6 address on eth2 does not hold back the removal of an IPv4 address of eth1', () => {
    const refused = addAddr(4, '2600:1f18::10');
    const plan = [refused, addRule('2600:1f18::10/128', 10002), delRule('10.0.1.40/32', 10001), delAddr(3, '10.0.1.40')];
    expect(blockedDeletions(plan, new Set([refused])).size).toBe(0);
  });

  it('an address and its /32 rule are one subject, whatever the spelling', () => {
    expect(subjectsOf(addAddr(3, '2600:1F18:0:0::10'))).toContain('ip:2600:1f18::10');
    expect(subjectsOf(delRule('2600:1f18::10/128', 10001))).toContain('ip:2600:1f18::10');
    expect(subjectsOf(delRule('10.0.2.16/28', 10001))).toContain('ip:10.0.2.16/28');
  });

  // A deletion is blocked exactly when it is connected to a failed addition: so never without a failure, always
  // when it shares a subject with one, and never across disjoint tables and addresses.
  const tables = fc.integer({ min: 10001, max: 10004 });
  const ips = fc.integer({ min: 10, max: 30 }).map((n) => `10.0.1.${n}`);
  const change = fc.oneof(
    fc.tuple(ips, tables).map(([ip, t]) => addRule(`${ip}/32`, t)),
    fc.tuple(ips, tables).map(([ip, t]) => delRule(`${ip}/32`, t)),
    tables.map((t) => addRoute(t)),
    tables.map((t) => delRoute(t)),
  );
  it('property: no failure, nothing blocked; a deletion sharing a subject with a failure is blocked', () => {
    fc.assert(fc.property(fc.array(change, { maxLength: 12 }), fc.nat(), (plan, k) => {
      expect(blockedDeletions(plan, new Set()).size).toBe(0);
      const adds = plan.filter((c) => !isDeletion(c));
      if (adds.length === 0) return;
      const failed = adds[k % adds.length] as Change;
      const blocked = blockedDeletions(plan, new Set([failed]));
      const failedSubjects = new Set(subjectsOf(failed));
      for (const d of plan.filter(isDeletion)) {
        if (subjectsOf(d).some((s) => failedSubjects.has(s))) expect(blocked.has(d)).toBe(true);
      }
      for (const b of blocked) expect(isDeletion(b)).toBe(true);
    }));
  });

  it('property: deletions whose subjects never meet the failed addition\'s unit go ahead', () => {
    // Plans in two disjoint halves (tables and IPs of eth1 vs eth2): a failure in one never blocks the other.
    fc.assert(fc.property(fc.array(change, { maxLength: 8 }), fc.array(change, { maxLength: 8 }), (a, b) => {
      const shift = (c: Change): Change => {
        if (c.op === 'add-rule' || c.op === 'del-rule') return { ...c, rule: { ...c.rule, table: c.rule.table + 100, src: (c.rule.src ?? '').replace('10.0.1.', '10.0.2.') } };
        if (c.op === 'add-route' || c.op === 'del-route') return { ...c, route: { ...c.route, table: c.route.table + 100 } };
        return c;
      };
      const other = b.map(shift);
      const failed = new Set(a.filter((c) => !isDeletion(c)));
      const blocked = blockedDeletions([...a, ...other], failed);
      for (const d of other) expect(blocked.has(d)).toBe(false);
    }));
  });
});
