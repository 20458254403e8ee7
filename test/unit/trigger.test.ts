import { describe, expect, it } from 'vitest';
import { SyncTrigger } from '../../src/daemon/trigger';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SyncTrigger', () => {
  it('stop() during a run: busy until the run ends, idle() resolves only then, and nothing runs after', async () => {
    let release = (): void => undefined;
    const runs: string[][] = [];
    const t = new SyncTrigger<string>((k) => { runs.push([...k]); return new Promise<void>((r) => { release = r; }); }, 0);
    t.request(['a']);
    await tick(5);
    expect(t.busy).toBe(true);
    t.request(['b']);
    t.stop();
    let idle = false;
    const waiting = t.idle().then(() => { idle = true; });
    await tick(5);
    expect([t.busy, idle]).toEqual([true, false]);
    release();
    await waiting;
    expect(t.busy).toBe(false);
    await tick(5);
    expect(runs).toEqual([['a']]);
  });

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

describe('SyncTrigger minimum interval', () => {
  it('lets a burst of runs through, then spaces the runs of a long storm', async () => {
    const starts: number[] = [];
    const t = new SyncTrigger<string>(async () => { starts.push(performance.now()); }, 1, 100, 3);
    const storm = setInterval(() => t.request(['link']), 2);
    await tick(600);
    clearInterval(storm);
    await t.idle();
    // 600 ms of events every 2 ms: without the limit ~300 runs; with it, a burst of 3 then about one per 100 ms.
    expect(starts.length).toBeGreaterThanOrEqual(4);
    expect(starts.length).toBeLessThanOrEqual(3 + 7);
    const late = starts.slice(3);
    for (let i = 1; i < late.length; i++) expect(late[i]! - late[i - 1]!).toBeGreaterThanOrEqual(95);
  });

  it('a lone request after quiet waits only the debounce; an urgent one skips the interval', async () => {
    const runs: string[][] = [];
    const t = new SyncTrigger<string>(async (k) => { runs.push([...k]); }, 1, 5000, 1);
    const first = performance.now();
    t.request(['link']);
    await t.idle();
    expect(performance.now() - first).toBeLessThan(2500);
    t.request(['route']); // would wait for the 5 s interval
    await tick(20);
    expect(runs).toEqual([['link']]);
    t.request(['imds'], true);
    await t.idle();
    expect(performance.now() - first).toBeLessThan(2500);
    expect(runs).toEqual([['link'], ['route', 'imds']]);
  });
});

describe('SyncTrigger and writing runs', () => {
  it('a run after a run that wrote costs no token', async () => {
    const runs: string[][] = [];
    // One token, refilled every 5 s: only free runs can follow the first one quickly.
    const t = new SyncTrigger<string>(async (k) => { runs.push([...k]); return k.has('repair'); }, 1, 5000, 1);
    t.request(['repair']);
    await t.idle();
    t.request(['echo']); // the echo of the repair's writes: free
    await t.idle();
    t.request(['later']); // now the bucket is empty: waits for the interval
    await tick(50);
    expect(runs).toEqual([['repair'], ['echo']]);
    t.stop();
  });
});
