import { describe, expect, it } from 'vitest';
import { SyncTrigger } from '../../src/daemon/trigger';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SyncTrigger', () => {
  it('coalesces a burst into one run with the union of kinds', async () => {
    const runs: string[][] = [];
    const t = new SyncTrigger<string>(async (k) => { runs.push([...k].sort()); }, 5);
    for (let i = 0; i < 1000; i++) t.request([i % 2 ? 'route' : 'rule']);
    t.request(['link']);
    await t.idle();
    expect(runs).toEqual([['link', 'route', 'rule']]);
  });

  it('never runs twice at once, and runs once more for requests made during a run', async () => {
    let active = 0;
    let maxActive = 0;
    const runs: string[][] = [];
    const t = new SyncTrigger<string>(async (k) => {
      active++; maxActive = Math.max(maxActive, active);
      runs.push([...k]);
      await tick(20);
      active--;
    }, 0);
    t.request(['a']);
    await tick(5);
    t.request(['b']);
    t.request(['c']);
    await t.idle();
    expect(maxActive).toBe(1);
    expect(runs).toEqual([['a'], ['b', 'c']]);
  });

  it('keeps running after a run throws, and stop() drops what is pending', async () => {
    let n = 0;
    const t = new SyncTrigger<string>(async () => { n++; if (n === 1) throw new Error('boom'); }, 0);
    t.request(['x']);
    await t.idle();
    t.request(['y']);
    await t.idle();
    expect(n).toBe(2);
    t.stop();
    t.request(['z']);
    await t.idle();
    expect(n).toBe(2);
  });
});
