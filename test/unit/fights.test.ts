import { describe, expect, it } from 'vitest';
import { likelyParties } from '../../src/daemon/fight-parties';
import { describeObject, FightDamper, objectKey } from '../../src/daemon/fights';
import type { Change } from '../../src/core/types';

const rule = (src: string): Change => ({
  op: 'add-rule', reason: 'missing',
  rule: { family: 4, priority: 10100, table: 10001, protocol: 236, src: `${src}/32`, action: 1 },
});
const RULE = rule('10.0.1.20');
const OTHER = rule('10.0.1.21');
const DEL: Change = { op: 'del-rule', reason: 'no longer desired', rule: { family: 4, priority: 10100, table: 10002, protocol: 236, src: '10.0.2.9/32', action: 1 } };

function damper(capMs = 1000) {
  let now = 0;
  const d = new FightDamper({ baseMs: 100, capMs }, () => now);
  return { d, at: (ms: number) => { now = ms; } };
}

/** One sync at `ms` whose plan is `plan`: what went, with everything allowed taken by the kernel. */
function sync(h: ReturnType<typeof damper>, ms: number, plan: Change[]) {
  h.at(ms);
  const { allowed, withheld } = h.d.filter(plan);
  const started = h.d.applied(allowed);
  const ended = h.d.expire();
  return { allowed, withheld, started, ended };
}

describe('FightDamper', () => {
  it('keeps the creation and the first repair immediate, then spaces repairs 100 ms doubling up to the cap', () => {
    const h = damper(1000);
    const madeAt: number[] = [];
    // The other party removes the rule every 10 ms; a sync runs every 10 ms and plans the add whenever it is gone.
    for (let ms = 0; ms <= 5000; ms += 10) if (sync(h, ms, [RULE]).allowed.length === 1) madeAt.push(ms);
    expect(madeAt.slice(0, 8)).toEqual([0, 10, 110, 310, 710, 1510, 2510, 3510]);
    const gaps = madeAt.slice(1).map((t, i) => t - madeAt[i]!);
    expect(Math.max(...gaps)).toBe(1000);
  });

  it('withholds only the object in the fight: other changes and deletions go on', () => {
    const h = damper();
    sync(h, 0, [RULE]);
    sync(h, 1, [RULE]);
    sync(h, 2, [RULE]); // withheld until 101
    const r = sync(h, 50, [RULE, OTHER, DEL]);
    expect(r.allowed).toEqual([OTHER, DEL]);
    expect(r.withheld).toEqual([RULE]);
    expect(h.d.nextWakeAt()).toBe(101);
  });

  it('starts one fight at the second repair within the quiet period and ends it once the object stayed for 2 × cap', () => {
    const h = damper(1000);
    expect(sync(h, 0, [RULE]).started).toEqual([]);
    expect(sync(h, 5, [RULE]).started).toEqual([]); // first repair: could be anything
    const third = sync(h, 105, [RULE]);
    expect(third.started.map((f) => [f.object, f.repairs, f.since])).toEqual([['rule from 10.0.1.20/32 lookup 10001 pref 10100 proto 236', 2, 105]]);
    for (let ms = 305; ms < 3000; ms += 500) expect(sync(h, ms, [RULE]).started).toEqual([]); // one warning per fight
    expect(h.d.fights.length).toBe(1);
    expect(h.d.inFight(RULE)).toBe(true);
    expect(h.d.inFight(OTHER)).toBe(false);
    // The other party gave up: the rule stays (not in the plan any more).
    const last = h.d.fights[0]!;
    const lastAdd = 2805;
    expect(last.repairs).toBeGreaterThan(2);
    expect(sync(h, lastAdd + 2000, []).ended).toEqual([]);
    expect(h.d.nextWakeAt()).toBe(lastAdd + 2001);
    const over = sync(h, lastAdd + 2001, []);
    expect(over.ended.map((f) => f.object)).toEqual([last.object]);
    expect(h.d.fights).toEqual([]);
    expect(h.d.nextWakeAt()).toBeUndefined();
    // After the fight, the next removal is repaired at once again.
    expect(sync(h, 10_000, [RULE]).allowed).toEqual([RULE]);
  });

  it('an object left alone for the quiet period starts a fresh streak (a re-add much later is immediate)', () => {
    const h = damper(1000);
    sync(h, 0, [RULE]);
    sync(h, 10, [RULE]);
    expect(sync(h, 20, [RULE]).allowed).toEqual([]);
    expect(sync(h, 2200, [RULE]).allowed).toEqual([RULE]);
    expect(sync(h, 2210, [RULE]).allowed).toEqual([RULE]);
    expect(h.d.fights).toEqual([]);
  });

  it('a withheld repair that is no longer planned (the object came back, or is no longer wanted) is not waited for', () => {
    const h = damper();
    sync(h, 0, [RULE]);
    sync(h, 1, [RULE]);
    expect(sync(h, 101, [RULE]).started.length).toBe(1);
    expect(sync(h, 150, [RULE]).withheld).toEqual([RULE]);
    expect(h.d.nextWakeAt()).toBe(301);
    sync(h, 200, []);
    expect(h.d.nextWakeAt()).toBe(101 + 2001); // only the end of the fight
  });

  it('an object ec2netd deleted itself (ENI detached, IP unassigned) is created afresh, not repaired: no fight', () => {
    const h = damper(1000);
    const del: Change = { op: 'del-rule', reason: 'link gone', rule: (RULE as Extract<Change, { op: 'add-rule' }>).rule };
    // Attach and detach every 50 ms, ten times: each creation goes at once and no fight starts.
    for (let k = 0; k < 10; k++) {
      const made = sync(h, k * 100, [RULE]);
      expect(made.allowed).toEqual([RULE]);
      expect(made.started).toEqual([]);
      sync(h, k * 100 + 50, [del]);
    }
    expect(h.d.fights).toEqual([]);
  });

  it('forgive: routes the kernel dropped (link flap) start afresh unless already in a fight', () => {
    const h = damper();
    const route: Change = { op: 'add-route', reason: 'missing', route: { family: 4, table: 10001, dst: '0.0.0.0/0', gateway: '10.0.1.1', ifindex: 3, protocol: 236, scope: 0, type: 1 } };
    sync(h, 0, [route, RULE]);
    sync(h, 1, [route, RULE]);
    expect(sync(h, 2, [route, RULE]).allowed).toEqual([]);
    h.d.forgive('route');
    expect(sync(h, 3, [route, RULE]).allowed).toEqual([route]);
    sync(h, 200, [route, RULE]);
    sync(h, 300, [route]);
    expect(h.d.fights.map((f) => f.object)).toEqual([describeObject(RULE), describeObject(route)]);
    h.d.forgive('route');
    expect(sync(h, 302, [route]).allowed).toEqual([]);
  });

  it('keys objects like the diff does; deletions are never damped', () => {
    expect(objectKey(RULE)).toBe(objectKey(rule('10.0.1.20')));
    expect(objectKey(RULE)).not.toBe(objectKey(OTHER));
    expect(objectKey(DEL)).toBeUndefined();
    expect(describeObject({ op: 'add-route', reason: 'missing', linkName: 'eth1', route: { family: 4, table: 10001, dst: '0.0.0.0/0', gateway: '10.0.1.1', ifindex: 3, protocol: 236, scope: 0, type: 1 } }))
      .toBe('route default via 10.0.1.1 dev eth1 table 10001 proto 236');
  });
});

describe('likelyParties', () => {
  const none = { networkd: { state: 'absent' as const }, managers: [] };
  it('names systemd-networkd for rules unless ManageForeignRoutingPolicyRules=no, and the installed managers', () => {
    expect(likelyParties('rule', none)).toEqual([]);
    expect(likelyParties('rule', { ...none, networkd: { state: 'active' } })).toEqual(['systemd-networkd (ManageForeignRoutingPolicyRules is not "no")']);
    expect(likelyParties('rule', { ...none, networkd: { state: 'active', manageForeignRoutingPolicyRules: false } })).toEqual([]);
    expect(likelyParties('route', { ...none, networkd: { state: 'enabled', manageForeignRoutingPolicyRules: false } })).toEqual(['systemd-networkd (ManageForeignRoutes is not "no")']);
    expect(likelyParties('rule', { ...none, managers: [{ id: 'amazon-ec2-net-utils', installed: true, active: true, evidence: [] }] }))
      .toEqual(['amazon-ec2-net-utils (active)']);
  });
});
