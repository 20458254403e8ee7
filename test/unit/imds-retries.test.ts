import { describe, expect, it } from 'vitest';
import { ImdsRetries, MAX_UNKNOWN_TRIES, WHOLE } from '../../src/daemon/imds-retries';

const BASE = 200;
const MAX = 10_000;

/** Runs the retries as the daemon does: at each due time, reads what is due, and `stillWaiting` says what then waits. */
function run(r: ImdsRetries, until: number, stillWaiting: (now: number) => { unknown: string[]; incomplete: string[] }): Map<string, number[]> {
  const reads = new Map<string, number[]>();
  for (let now = r.nextAt(); now !== undefined && now <= until; now = r.nextAt()) {
    const due = r.due(now);
    r.started(due, now);
    for (const k of due) reads.set(k, [...(reads.get(k) ?? []), now]);
    r.update({ ...stillWaiting(now), whole: false }, now);
  }
  return reads;
}

describe('ImdsRetries', () => {
  it('reads a new link at once, then backs off per key, doubling up to the maximum', () => {
    const r = new ImdsRetries(BASE, MAX);
    r.update({ unknown: ['a'], incomplete: [], whole: false }, 0);
    expect(r.due(0)).toEqual(['a']);
    const reads = run(r, 200_000, () => ({ unknown: ['a'], incomplete: [] }));
    const gaps = (reads.get('a') ?? []).slice(1).map((t, i) => t - (reads.get('a') ?? [])[i]!);
    expect(gaps).toEqual([200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000, 10_000]);
    // A link IMDS never lists is given up after MAX_UNKNOWN_TRIES reads.
    expect(reads.get('a')).toHaveLength(MAX_UNKNOWN_TRIES);
    expect(r.waiting).toBe(false);
  });

  it('a key that appears while another is deep in its backoff starts at once, and its own backoff from the base', () => {
    const r = new ImdsRetries(BASE, MAX);
    r.update({ unknown: [], incomplete: ['old'], whole: false }, 0);
    run(r, 30_000, () => ({ unknown: [], incomplete: ['old'] }));
    const now = 30_000;
    r.update({ unknown: ['new'], incomplete: ['old'], whole: false }, now);
    expect(r.due(now)).toEqual(['new']);
    r.started(['new'], now);
    expect(r.due(now + 1)).toEqual([]);
    expect(r.nextAt()).toBe(now + BASE);
    expect(r.due(now + BASE)).toEqual(['new']);
  });

  it('an ENI found incomplete by a refresh waits one base step; one that stops waiting starts over next time', () => {
    const r = new ImdsRetries(BASE, MAX);
    r.update({ unknown: [], incomplete: ['e'], whole: false }, 1000);
    expect(r.due(1000)).toEqual([]);
    expect(r.nextAt()).toBe(1000 + BASE);
    r.started(['e'], 1200);
    r.started(['e'], 1600);
    expect(r.nextAt()).toBe(1600 + 2 * BASE);
    r.update({ unknown: [], incomplete: [], whole: false }, 2000);
    expect(r.waiting).toBe(false);
    expect(r.nextAt()).toBeUndefined();
    r.update({ unknown: [], incomplete: ['e'], whole: false }, 5000);
    expect(r.nextAt()).toBe(5000 + BASE);
  });

  it('keeps a link read ahead of the sync (tried) on its schedule, and reads the whole instance before the first answer', () => {
    const r = new ImdsRetries(BASE, MAX);
    r.started(['n'], 0);
    expect(r.tried('n')).toBe(true);
    r.update({ unknown: ['n'], incomplete: [], whole: true }, 5);
    expect(r.due(5)).toEqual([]);
    // Due within a base step of each other: read together.
    expect(r.due(BASE)).toEqual(['n', WHOLE]);
    expect(r.due(BASE - 1)).toEqual([]);
  });
});
