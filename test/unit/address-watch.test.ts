// The address watch's decisions (src/core/address-watch.ts): which address events IMDS does not explain, when the
// ENI is re-read, and when a deleted address IMDS still lists is put back. Time is simulated.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressWatch, afterWrites, DEFAULT_WATCH_POLICY, unexplainedChanges, type KernelAddresses, type ReadOutcome } from '../../src/core/address-watch';
import type { Change, ImdsSnapshot, KernelAddress, KernelLink } from '../../src/core/types';
import { eni } from '../helpers/kernel-model';

const MAC0 = '0a:ec:00:00:01:00';
const MAC1 = '0a:ec:00:00:01:01';
const links: KernelLink[] = [
  { index: 2, name: 'eth0', mac: MAC0, up: true },
  { index: 3, name: 'eth1', mac: MAC1, up: true },
];
const addr = (ifindex: number, address: string): KernelAddress => ({ ifindex, family: address.includes(':') ? 6 : 4, address, prefixLen: 24 });
const kernel = (eth1: string[], extra: KernelAddress[] = []): KernelAddresses => ({
  links, addresses: [addr(2, '10.0.1.10'), ...eth1.map((a) => addr(3, a)), ...extra],
});
const snapshot = (eth1: string[], prefixes: string[] = []): ImdsSnapshot => ({
  primaryMac: MAC0, pending: [],
  enis: [eni(MAC0, 0, ['10.0.1.10']), eni(MAC1, 1, eth1, { ipv4Prefixes: prefixes })],
});

describe('unexplainedChanges', () => {
  it('an address added that IMDS does not list, and one deleted that it lists, are unexplained', () => {
    expect(unexplainedChanges(kernel(['10.0.1.20', '10.0.1.21']), kernel(['10.0.1.20', '10.0.1.22']), snapshot(['10.0.1.20', '10.0.1.21']))).toEqual([
      { mac: MAC1, address: '10.0.1.22', change: 'appeared' },
      { mac: MAC1, address: '10.0.1.21', change: 'vanished' },
    ]);
  });

  it('what IMDS explains is not: listed addresses appearing (ec2netd adding them), unlisted ones going', () => {
    expect(unexplainedChanges(kernel(['10.0.1.20', '10.0.1.99']), kernel(['10.0.1.20', '10.0.1.21']), snapshot(['10.0.1.20', '10.0.1.21']))).toEqual([]);
  });

  it('an address inside a delegated prefix is listed', () => {
    expect(unexplainedChanges(kernel(['10.0.1.20']), kernel(['10.0.1.20', '10.0.1.66']), snapshot(['10.0.1.20'], ['10.0.1.64/28']))).toEqual([]);
  });

  it("the ENI's primary IP deleted is not a failover (it cannot move), nor is a flush of the link: repaired at once as before", () => {
    expect(unexplainedChanges(kernel(['10.0.1.20', '10.0.1.21']), kernel(['10.0.1.21']), snapshot(['10.0.1.20', '10.0.1.21']))).toEqual([]);
    expect(unexplainedChanges(kernel(['10.0.1.20', '10.0.1.21', '10.0.1.22']), kernel([]), snapshot(['10.0.1.20', '10.0.1.21', '10.0.1.22']))).toEqual([]);
  });

  it('links that are down, changed index, or not ENIs, and IPv6 link-local addresses, are left out', () => {
    const down = { ...kernel(['10.0.1.20']), links: links.map((l) => ({ ...l, up: l.index !== 3 })) };
    expect(unexplainedChanges(kernel(['10.0.1.20', '10.0.1.21']), down, snapshot(['10.0.1.20', '10.0.1.21']))).toEqual([]);
    const moved = { links: links.map((l) => (l.index === 3 ? { ...l, index: 9 } : l)), addresses: [addr(9, '10.0.1.20'), addr(9, '10.0.1.55')] };
    expect(unexplainedChanges(kernel(['10.0.1.20']), moved, snapshot(['10.0.1.20']))).toEqual([]);
    const spare = { links: [...links, { index: 7, name: 'sp0', mac: '02:00:00:00:00:07', up: true }], addresses: [] };
    expect(unexplainedChanges(spare, { ...spare, addresses: [addr(7, '198.18.0.1')] }, snapshot(['10.0.1.20']))).toEqual([]);
    expect(unexplainedChanges(kernel(['10.0.1.20']), kernel(['10.0.1.20', 'fe80::1']), snapshot(['10.0.1.20']))).toEqual([]);
  });
});

describe('the same addresses dump, compared with itself', () => {
  it('is unchanged whatever the links did, as comparing a copy of it says (the shortcut is exact)', () => {
    const linkStates = fc.array(fc.record({ index: fc.constantFrom(2, 3, 9), up: fc.boolean() }), { maxLength: 3 })
      .map((ls) => ls.map(({ index, up }, i) => ({ ...(links[i % 2] as KernelLink), index, up })));
    const addresses = fc.subarray(['10.0.1.20', '10.0.1.21', '10.0.1.55', 'fe80::1'])
      .chain((a) => fc.constantFrom(2, 3, 9).map((ifindex) => a.map((x) => addr(ifindex, x))));
    fc.assert(fc.property(linkStates, linkStates, addresses, fc.subarray(['10.0.1.20', '10.0.1.21']), (l1, l2, dump, listed) => {
      const same = unexplainedChanges({ links: l1, addresses: dump }, { links: l2, addresses: dump }, snapshot(listed));
      const copied = unexplainedChanges({ links: l1, addresses: dump }, { links: l2, addresses: [...dump] }, snapshot(listed));
      return same.length === 0 && copied.length === 0;
    }), { numRuns: 500 });
  });

  it('writes of rules and routes alone leave the very same observation (so the next one compares as unchanged at once)', () => {
    const before = kernel(['10.0.1.20']);
    const rule: Change = { op: 'add-rule', rule: { family: 4, priority: 10100, table: 10001, protocol: 236, src: '10.0.1.20/32', action: 1 }, reason: 'test' };
    expect(afterWrites(before, [rule])).toBe(before);
    expect(afterWrites(before, [rule, { op: 'add-address', address: { ...addr(3, '10.0.1.21'), noPrefixRoute: true }, linkName: 'eth1', reason: 'test' }])).not.toBe(before);
  });
});

describe("afterWrites: the observation as ec2netd's own writes left it (their echoes are dropped in the kernel)", () => {
  const add = (address: string): Change => ({ op: 'add-address', address: { ...addr(3, address), noPrefixRoute: true }, linkName: 'eth1', reason: 'test' });
  const del = (address: string): Change => ({ op: 'del-address', address: addr(3, address), linkName: 'eth1', reason: 'test' });

  it('adds what was added (once), removes what was deleted, sets up the links set up; other changes change nothing', () => {
    const before = kernel(['10.0.1.20', '10.0.1.99']);
    const after = afterWrites(before, [add('10.0.1.21'), add('10.0.1.20'), del('10.0.1.99'),
      { op: 'add-rule', rule: { family: 4, priority: 10100, table: 10001, protocol: 236, src: '10.0.1.21/32', action: 1 }, reason: 'test' }]);
    expect(after.addresses.map((a) => a.address)).toEqual(['10.0.1.10', '10.0.1.20', '10.0.1.21']);
    const down = { ...before, links: links.map((l) => ({ ...l, up: l.index !== 3 })) };
    expect(afterWrites(down, [{ op: 'link-up', link: { ...links[1] as KernelLink, up: false }, reason: 'test' }]).links.every((l) => l.up)).toBe(true);
    expect(before.addresses).toHaveLength(3); // not modified in place
  });

  it('an address ec2netd added and another process deleted before any sync observed it is a vanished address, not "no change"', () => {
    const listed = snapshot(['10.0.1.20', '10.0.1.23']);
    const beforeWrite = kernel(['10.0.1.20']);
    const afterDeletion = kernel(['10.0.1.20']);
    // Compared with the state before the write, nothing happened: the deletion would be repaired at once.
    expect(unexplainedChanges(beforeWrite, afterDeletion, listed)).toEqual([]);
    expect(unexplainedChanges(afterWrites(beforeWrite, [add('10.0.1.23')]), afterDeletion, listed))
      .toEqual([{ mac: MAC1, address: '10.0.1.23', change: 'vanished' }]);
  });

  it('on a link ec2netd just set up, an address another process deletes is watched too', () => {
    const listed = snapshot(['10.0.1.20', '10.0.1.23']);
    const beforeWrite = { links: links.map((l) => ({ ...l, up: l.index !== 3 })), addresses: kernel(['10.0.1.20']).addresses };
    const written = afterWrites(beforeWrite, [{ op: 'link-up', link: { ...links[1] as KernelLink, up: false }, reason: 'test' }, add('10.0.1.23')]);
    expect(unexplainedChanges(written, kernel(['10.0.1.20']), listed)).toEqual([{ mac: MAC1, address: '10.0.1.23', change: 'vanished' }]);
  });
});

interface Run {
  reads: number[];
  /** When the deleted address stopped being held back (undefined: never while it was listed). */
  releasedAt: number | undefined;
  resolvedAt: number | undefined;
  expiredAt: number | undefined;
}

/**
 * Drives one watch to its end: `listed(t)` is what IMDS says at time t; each read takes `readMs`. Starts with the
 * event `change` of 10.0.1.21 at t = 0.
 */
function drive(change: 'appeared' | 'vanished', listed: (t: number) => boolean, readMs = 5): Run {
  const watch = new AddressWatch();
  const before = kernel(change === 'vanished' ? ['10.0.1.20', '10.0.1.21'] : ['10.0.1.20']);
  const after = kernel(change === 'vanished' ? ['10.0.1.20'] : ['10.0.1.20', '10.0.1.21']);
  const listing = (t: number) => snapshot(listed(t) ? ['10.0.1.20', '10.0.1.21'] : ['10.0.1.20']);
  expect(watch.observe(before, after, listing(0), 0)).toHaveLength(1);
  const run: Run = { reads: [], releasedAt: undefined, resolvedAt: undefined, expiredAt: undefined };
  let now = 0;
  for (let i = 0; i < 1000; i++) {
    const due = watch.due();
    if (due.length === 0) return run;
    const t = Math.max(now, due[0]?.at ?? now);
    expect(watch.heldBack(MAC1, '10.0.1.21')).toBe(change === 'vanished');
    watch.readStarted(MAC1, t);
    run.reads.push(t);
    now = t + readMs;
    const out: ReadOutcome = watch.readDone(MAC1, t, listing(t), now);
    if (out.released.length > 0) run.releasedAt = now;
    if (out.resolved.length > 0) run.resolvedAt = now;
    if (out.expired.length > 0) run.expiredAt = now;
  }
  throw new Error('the watch never ended');
}

describe('AddressWatch', () => {
  const { firstRetryMs, maxRetryMs, windowMs, holdMs, minGapMs } = DEFAULT_WATCH_POLICY;

  it('reads at once, then backs off from 100 ms doubling to 2 s', () => {
    const run = drive('appeared', () => false, 0);
    expect(run.reads).toEqual([0, 100, 300, 700, 1500, 3100, 5100, 7100, 9100]);
    expect(run.expiredAt).toBeLessThanOrEqual(windowMs);
    expect(run.resolvedAt).toBeUndefined();
  });

  it('an appeared address ends its watch on the first read that lists it', () => {
    const run = drive('appeared', (t) => t >= 600);
    // Each read takes 5 ms; the backoff counts from the end of the previous one.
    expect(run.reads).toEqual([0, 105, 310, 715]);
    expect(run.resolvedAt).toBe(720);
  });

  it('a deleted address IMDS stops listing 2 s later is never put back', () => {
    const run = drive('vanished', (t) => t < 2000);
    expect(run.releasedAt).toBeUndefined();
    expect(run.resolvedAt).toBeGreaterThanOrEqual(2000);
    expect(run.resolvedAt).toBeLessThan(2000 + maxRetryMs + 10);
  });

  it('a deleted address IMDS keeps listing is put back after a read that started holdMs after the deletion', () => {
    const run = drive('vanished', () => true);
    expect(run.reads).toContain(holdMs);
    expect(run.releasedAt).toBe(holdMs + 5);
  });

  it('a deleted address whose reads all fail is put back when its window ends (last good state)', () => {
    const watch = new AddressWatch();
    watch.observe(kernel(['10.0.1.20', '10.0.1.21']), kernel(['10.0.1.20']), snapshot(['10.0.1.20', '10.0.1.21']), 0);
    let out: ReadOutcome = { resolved: [], released: [], expired: [] };
    for (let t = 0; t <= windowMs && watch.heldBack(MAC1, '10.0.1.21'); t += 1000) out = watch.readDone(MAC1, t, undefined, t);
    expect(out.released).toEqual(['10.0.1.21']);
  });

  it('an address added back by someone else ends its watch; a new event restarts the backoff', () => {
    const watch = new AddressWatch();
    const with21 = kernel(['10.0.1.20', '10.0.1.21']);
    const without = kernel(['10.0.1.20']);
    const listed = snapshot(['10.0.1.20', '10.0.1.21']);
    watch.observe(with21, without, listed, 0);
    watch.readStarted(MAC1, 0);
    watch.readDone(MAC1, 0, listed, 5);
    watch.observe(without, with21, listed, 50);
    expect(watch.heldBack(MAC1, '10.0.1.21')).toBe(false);
    expect(watch.due()).toEqual([]);
    watch.observe(with21, kernel(['10.0.1.20', '10.0.1.21', '10.0.1.30']), listed, 60);
    expect(watch.due()).toEqual([{ mac: MAC1, at: 60 }]);
  });

  it('property: reads of a MAC are at least minGapMs apart and stop within the window; a listing shorter than holdMs never re-adds', () => {
    fc.assert(fc.property(
      fc.constantFrom<'appeared' | 'vanished'>('appeared', 'vanished'),
      fc.integer({ min: 1, max: 15_000 }),
      fc.integer({ min: 0, max: 300 }),
      (change, flipAt, readMs) => {
        const listedBefore = change === 'vanished';
        const run = drive(change, (t) => (t < flipAt ? listedBefore : !listedBefore), readMs);
        run.reads.slice(1).forEach((t, i) => expect(t - (run.reads[i] ?? 0)).toBeGreaterThanOrEqual(Math.min(minGapMs, firstRetryMs)));
        expect(run.reads.at(-1)).toBeLessThanOrEqual(windowMs);
        if (change === 'vanished' && flipAt < holdMs) expect(run.releasedAt).toBeUndefined();
        if (change === 'vanished' && flipAt > holdMs + readMs) expect(run.releasedAt).toBeDefined();
      },
    ), { numRuns: 300 });
  });
});
