import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SyncTrigger, type RunOutcome, type TriggerOptions } from '../../src/daemon/trigger';

// Deterministic: fake timers, and the trigger's clock is the fake Date.
beforeEach(() => { vi.useFakeTimers(); vi.setSystemTime(0); });
afterEach(() => { vi.useRealTimers(); });

const FULL = ['link', 'route', 'rule'];

function options(o: Partial<TriggerOptions<string>> = {}): TriggerOptions<string> {
  return { debounceMs: 5, minIntervalMs: 100, burst: 3, maxIntervalMs: 0, fullKinds: FULL, retryBaseMs: 200, retryMaxMs: 1000, now: () => Date.now(), ...o };
}

interface Run { at: number; kinds: string[] }

/** A trigger whose runs are recorded; `outcome` decides each run's result, `durationMs` how long it takes. */
function recorder(o: Partial<TriggerOptions<string>> = {}, outcome: (n: number) => RunOutcome | 'throw' = () => 'ok', durationMs = 0) {
  const runs: Run[] = [];
  let active = 0;
  let maxActive = 0;
  const t = new SyncTrigger<string>(async (k) => {
    active++; maxActive = Math.max(maxActive, active);
    runs.push({ at: Date.now(), kinds: [...k].sort() });
    if (durationMs > 0) await new Promise((r) => setTimeout(r, durationMs));
    active--;
    const result = outcome(runs.length);
    if (result === 'throw') throw new Error('boom');
    return result;
  }, options(o));
  return { t, runs, maxActive: () => maxActive };
}

describe('SyncTrigger', () => {
  it('stop() during a run: busy until the run ends, idle() resolves only then, and nothing runs after', async () => {
    let release = (): void => undefined;
    const runs: string[][] = [];
    const t = new SyncTrigger<string>((k) => { runs.push([...k]); return new Promise<RunOutcome>((r) => { release = () => r('ok'); }); }, options());
    t.request(['a']);
    await vi.advanceTimersByTimeAsync(5);
    expect(t.busy).toBe(true);
    t.request(['b']);
    t.stop();
    let idle = false;
    const waiting = t.idle().then(() => { idle = true; });
    await vi.advanceTimersByTimeAsync(50);
    expect([t.busy, idle]).toEqual([true, false]);
    release();
    await waiting;
    expect(t.busy).toBe(false);
    await vi.advanceTimersByTimeAsync(1000);
    expect(runs).toEqual([['a']]);
  });

  it('coalesces a burst into one run with the union of kinds, after the debounce', async () => {
    const { t, runs } = recorder();
    for (let i = 0; i < 1000; i++) t.request([i % 2 ? 'route' : 'rule']);
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(4);
    expect(runs).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual([{ at: 5, kinds: ['link', 'route', 'rule'] }]);
    t.stop();
  });

  it('a burst that goes on defers its run until debounceMs of quiet, and no more than debounceMaxMs after it began', async () => {
    const { t, runs } = recorder({ debounceMs: 5, debounceMaxMs: 50 });
    // 30 ms of requests, one a millisecond (a mass deletion): one run, 5 ms after the last.
    for (let i = 0; i < 30; i++) {
      t.request([i % 2 ? 'route' : 'rule']);
      await vi.advanceTimersByTimeAsync(1);
    }
    await vi.advanceTimersByTimeAsync(3);
    expect(runs).toEqual([]);
    await vi.advanceTimersByTimeAsync(2);
    expect(runs).toEqual([{ at: 34, kinds: ['route', 'rule'] }]);
    // Requests that never go quiet: a run every 50 ms from the first pending request.
    for (let i = 0; i < 120; i++) {
      t.request(['link']);
      await vi.advanceTimersByTimeAsync(1);
    }
    expect(runs.map((r) => r.at)).toEqual([34, 85, 135]); // the first of them at 35
  });

  it('never runs twice at once, and runs once more for requests made during a run', async () => {
    const { t, runs, maxActive } = recorder({ debounceMs: 1 }, () => 'ok', 20);
    t.request(['a']);
    await vi.advanceTimersByTimeAsync(5);
    t.request(['b']);
    t.request(['c']);
    await vi.advanceTimersByTimeAsync(100);
    expect(maxActive()).toBe(1);
    expect(runs.map((r) => r.kinds)).toEqual([['a'], ['b', 'c']]);
    expect(runs.map((r) => r.at)).toEqual([1, 22]); // the second right after the first ends (+ the debounce)
    t.stop();
  });

  it('idle() resolves once nothing is pending or running; stop() drops what is pending', async () => {
    const { t, runs } = recorder({ debounceMs: 10 });
    let idle = false;
    t.request(['x']);
    void t.idle().then(() => { idle = true; });
    await vi.advanceTimersByTimeAsync(9);
    expect(idle).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(idle).toBe(true);
    t.request(['y']);
    t.stop();
    await t.idle();
    await vi.advanceTimersByTimeAsync(1000);
    expect(runs.map((r) => r.kinds)).toEqual([['x']]);
  });
});

describe('SyncTrigger minimum interval (token bucket)', () => {
  it('lets a burst of runs through, then spaces the runs of a long storm by the minimum interval', async () => {
    const { t, runs } = recorder({ debounceMs: 1, minIntervalMs: 100, burst: 3 });
    // 600 ms of events every 2 ms: without the bucket ~300 runs.
    for (let ms = 0; ms < 600; ms += 2) {
      t.request(['link']);
      await vi.advanceTimersByTimeAsync(2);
    }
    await vi.advanceTimersByTimeAsync(1000);
    const starts = runs.map((r) => r.at);
    // 3 tokens at once (a run every ~2 ms), then one per 100 ms: the refill of 600 ms.
    expect(starts.slice(0, 3)).toEqual([1, 3, 5]);
    const late = starts.slice(3);
    for (let i = 1; i < late.length; i++) expect(late[i]! - late[i - 1]!).toBeGreaterThanOrEqual(100);
    expect(starts.length).toBe(3 + 6);
    t.stop();
  });

  it('the echo of a run that wrote is not free: every run takes a token', async () => {
    const { t, runs } = recorder({ debounceMs: 1, minIntervalMs: 5000, burst: 1 });
    t.request(['repair']);
    await vi.advanceTimersByTimeAsync(1);
    t.request(['echo']);
    await vi.advanceTimersByTimeAsync(4000);
    expect(runs.map((r) => r.kinds)).toEqual([['repair']]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(runs.map((r) => r.kinds)).toEqual([['repair'], ['echo']]);
    expect(runs[1]!.at).toBe(5001);
    t.stop();
  });

  it('a lone request after a quiet period waits only the debounce; an urgent one skips the bucket', async () => {
    const { t, runs } = recorder({ debounceMs: 1, minIntervalMs: 5000, burst: 1 });
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual([{ at: 1, kinds: ['link'] }]);
    t.request(['route']); // would wait for the 5 s interval
    await vi.advanceTimersByTimeAsync(20);
    expect(runs.length).toBe(1);
    t.request(['imds'], true);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs[1]).toEqual({ at: 22, kinds: ['imds', 'route'] });
    t.stop();
  });
});

describe('SyncTrigger retry after error', () => {
  it('runs a failed run again with its kinds, backing off exponentially up to the maximum, and resets on success', async () => {
    // Runs 1..4 fail (the 2nd by throwing), the 5th succeeds.
    const { t, runs } = recorder({ debounceMs: 0, minIntervalMs: 0, retryBaseMs: 200, retryMaxMs: 500 }, (n) => (n === 2 ? 'throw' : n < 5 ? 'failed' : 'ok'));
    t.request(['rule']);
    await vi.advanceTimersByTimeAsync(5000);
    expect(runs.map((r) => r.at)).toEqual([0, 200, 600, 1100, 1600]);
    expect(runs.every((r) => r.kinds.join() === 'rule')).toBe(true);
    // Success reset the backoff: the next request runs at once.
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs.at(-1)).toEqual({ at: 5000, kinds: ['link'] });
    t.stop();
  });

  it('a request during the backoff joins the retry instead of running early; idle() does not wait for a retry', async () => {
    const { t, runs } = recorder({ debounceMs: 0, minIntervalMs: 0, retryBaseMs: 1000 }, (n) => (n === 1 ? 'failed' : 'ok'));
    t.request(['rule']);
    await vi.advanceTimersByTimeAsync(0);
    await t.idle(); // resolves with the retry pending
    expect(runs.length).toBe(1);
    await vi.advanceTimersByTimeAsync(100);
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(899);
    expect(runs.length).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs[1]).toEqual({ at: 1000, kinds: ['link', 'rule'] });
    t.stop();
  });
});

describe('SyncTrigger maximum interval', () => {
  it('requests a full run maxIntervalMs after the last full run, and not while full runs happen anyway', async () => {
    const { t, runs } = recorder({ debounceMs: 1, minIntervalMs: 0, maxIntervalMs: 10_000 });
    t.request(FULL);
    await vi.advanceTimersByTimeAsync(1);
    await vi.advanceTimersByTimeAsync(4999);
    t.request(['rule']); // a partial run does not postpone the full re-read
    await vi.advanceTimersByTimeAsync(5002);
    // Armed when the first full run ended (1 ms), requested at 10 001 ms, run after the debounce.
    expect(runs.map((r) => [r.at, r.kinds.length])).toEqual([[1, 3], [5001, 1], [10_002, 3]]);
    await vi.advanceTimersByTimeAsync(2998);
    t.request(FULL); // a full run does: the next one comes 10 s after it
    await vi.advanceTimersByTimeAsync(10_000);
    expect(runs.length).toBe(4);
    await vi.advanceTimersByTimeAsync(2);
    expect(runs.map((r) => r.at)).toEqual([1, 5001, 10_002, 13_001, 23_002]);
    t.stop();
  });

  it('stop() ends the maximum-interval runs', async () => {
    const { t, runs } = recorder({ debounceMs: 0, maxIntervalMs: 1000 });
    t.request(FULL);
    await vi.advanceTimersByTimeAsync(0);
    t.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(runs.length).toBe(1);
  });
});

describe('SyncTrigger settle', () => {
  /** A trigger whose settle is recorded and takes `settleMs`; runs take no time, and fail when `fail` says so. */
  function settling(settleMs: number, fail: (n: number) => boolean = () => false, settleThrows = false) {
    const events: string[] = [];
    let n = 0;
    const t = new SyncTrigger<string>(async (k) => {
      n++;
      events.push(`run ${[...k].sort().join(',')} @${Date.now()}`);
      return fail(n) ? 'failed' : 'ok';
    }, options({
      minIntervalMs: 0,
      settle: async () => {
        events.push(`settle @${Date.now()}`);
        await new Promise((r) => setTimeout(r, settleMs));
        if (settleThrows) throw new Error('settle failed');
      },
    }));
    return { t, events };
  }

  it('settles after a run once nothing is pending, and a request made meanwhile waits for it, then settles too', async () => {
    const { t, events } = settling(20);
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(5);
    expect(events).toEqual(['run link @5', 'settle @5']);
    t.request(['rule']);
    expect(t.busy).toBe(true);
    await vi.advanceTimersByTimeAsync(20);
    // The settle ended at 25: the request's run goes after the debounce, then settles in turn.
    await vi.advanceTimersByTimeAsync(5);
    expect(events).toEqual(['run link @5', 'settle @5', 'run rule @30', 'settle @30']);
    await vi.advanceTimersByTimeAsync(20);
    expect(t.busy).toBe(false);
    t.stop();
  });

  it('does not settle while a request is pending: the next run goes first', async () => {
    const events: string[] = [];
    let t: SyncTrigger<string> | undefined;
    t = new SyncTrigger<string>(async (k) => {
      events.push(`run ${[...k].join(',')}`);
      if (k.has('a')) t?.request(['b']); // asked for during the run
      return 'ok';
    }, options({ minIntervalMs: 0, settle: async () => { events.push('settle'); } }));
    t.request(['a']);
    await vi.advanceTimersByTimeAsync(20);
    expect(events).toEqual(['run a', 'run b', 'settle']);
    t.stop();
  });

  it('does not settle after a failed run; a settle that throws stops nothing', async () => {
    const { t, events } = settling(0, (n) => n === 1, true);
    t.request(['link']);
    await vi.advanceTimersByTimeAsync(5);
    expect(events).toEqual(['run link @5']);
    // The retry (after retryBaseMs) succeeds and settles; its settle throws, and later runs still run and settle.
    await vi.advanceTimersByTimeAsync(200);
    expect(events).toEqual(['run link @5', 'run link @205', 'settle @205']);
    await vi.advanceTimersByTimeAsync(1);
    t.request(['rule']);
    await vi.advanceTimersByTimeAsync(6);
    expect(events).toEqual(['run link @5', 'run link @205', 'settle @205', 'run rule @211', 'settle @211']);
    expect(t.busy).toBe(false);
    t.stop();
  });
});

describe('SyncTrigger immediate', () => {
  it('an immediate request skips the debounce but not the bucket; the next request debounces again', async () => {
    const { t, runs } = recorder({ burst: 1 });
    t.request(['link'], false, true);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs.map((r) => r.at)).toEqual([0]);
    t.request(['rule'], false, true); // no token until 100 ms
    await vi.advanceTimersByTimeAsync(99);
    expect(runs.length).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs.map((r) => r.at)).toEqual([0, 100]);
    await vi.advanceTimersByTimeAsync(200);
    t.request(['route']);
    await vi.advanceTimersByTimeAsync(4);
    expect(runs.length).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs.map((r) => r.at)).toEqual([0, 100, 305]);
    t.stop();
  });
});
