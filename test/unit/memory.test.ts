// The memory reclaimer (src/daemon/memory.ts): one footprint-reducing GC after a burst has gone quiet; never during
// work, never for a few small syncs (a fight's repairs), at most one per interval, nothing without --expose-gc.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LATE_TRIM_MS, MemoryReclaimer } from '../../src/daemon/memory';

describe('MemoryReclaimer', () => {
  let heap = 0;
  beforeEach(() => { vi.useFakeTimers(); heap = 0; });
  afterEach(() => { vi.useRealTimers(); });

  const make = (gc: unknown = 'default'): { r: MemoryReclaimer; gc: unknown; reports: number[][] } => {
    const reports: number[][] = [];
    const collector = gc === 'default' ? vi.fn() : gc;
    const r = new MemoryReclaimer((ms, a, b) => void reports.push([ms, a, b]), { heapUsed: () => heap, gc: collector, now: () => Date.now(), rss: () => 60 << 20 });
    return { r, gc: collector, reports };
  };

  it('collects once, quietMs after the last sync of a large burst, with the footprint-reducing flavor', () => {
    const { r, gc, reports } = make();
    r.noteSync(1477);
    vi.advanceTimersByTime(900);
    r.noteSync(0); // work goes on: the reclaim waits for quiet
    vi.advanceTimersByTime(900);
    expect(gc).not.toHaveBeenCalled();
    vi.advanceTimersByTime(200);
    expect(gc).toHaveBeenCalledTimes(1);
    expect(gc).toHaveBeenCalledWith({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    expect(reports).toHaveLength(1);
    vi.advanceTimersByTime(60_000);
    expect(gc).toHaveBeenCalledTimes(1);
  });

  it('a storm of small syncs is a burst; a fight of a few repairs is not', () => {
    const storm = make();
    for (let i = 0; i < 40; i++) storm.r.noteSync(0);
    vi.advanceTimersByTime(1000);
    expect(storm.gc).toHaveBeenCalledTimes(1);
    const fight = make();
    for (let i = 0; i < 14; i++) { fight.r.noteSync(1); vi.advanceTimersByTime(700); }
    vi.advanceTimersByTime(10_000);
    expect(fight.gc).not.toHaveBeenCalled();
    // A fight that goes on (a repair every 20 s, backed off) never leaves idleMs of quiet.
    for (let i = 0; i < 10; i++) { fight.r.noteSync(1); vi.advanceTimersByTime(20_000); }
    expect(fight.gc).not.toHaveBeenCalled();
  });

  it('gives free malloc memory back after the collection and again LATE_TRIM_MS later, and reports then what it left', () => {
    const order: string[] = [];
    const reports: [number, number, boolean][] = [];
    let rss = 90 << 20;
    const r = new MemoryReclaimer((_ms, before, after, trimmed) => void reports.push([before, after, trimmed]), {
      gc: () => { order.push('gc'); rss = 60 << 20; },
      // V8 frees the collected Buffers' memory in a task after the collection: only the second trim finds it.
      trim: () => { order.push('trim'); const found = order.length > 2; if (found) rss = 58 << 20; return found; },
      rss: () => rss, now: () => Date.now(),
    });
    r.noteSync(1477);
    vi.advanceTimersByTime(1000);
    expect(order).toEqual(['gc', 'trim']);
    expect(reports).toEqual([]);
    vi.advanceTimersByTime(LATE_TRIM_MS);
    expect(order).toEqual(['gc', 'trim', 'trim']);
    expect(reports).toEqual([[90, 58, true]]);
    // A trim that throws (an addon built without it) is reported as nothing given back, never thrown from the timer.
    const flags: boolean[] = [];
    const broken = new MemoryReclaimer((_ms, _a, _b, trimmed) => void flags.push(trimmed), {
      gc: () => undefined, trim: () => { throw new TypeError('binding.mallocTrim is not a function'); }, now: () => Date.now(),
    });
    broken.noteSync(1477);
    expect(() => vi.advanceTimersByTime(1000 + LATE_TRIM_MS)).not.toThrow();
    expect(flags).toEqual([false]);
    // Stopping between the collection and the second trim cancels the trim.
    const stopped = new MemoryReclaimer(() => void flags.push(true), { gc: () => undefined, trim: () => { order.push('late'); return true; }, now: () => Date.now() });
    stopped.noteSync(1477);
    vi.advanceTimersByTime(1000);
    stopped.stop();
    vi.advanceTimersByTime(LATE_TRIM_MS);
    expect(order.filter((o) => o === 'late')).toHaveLength(1);
    expect(flags).toEqual([false]);
  });

  it('after smaller work, collects once it has been idle for idleMs, and only if resident memory grew since', () => {
    let rss = 60 << 20;
    const calls: number[] = [];
    const skips: number[][] = [];
    const r = new MemoryReclaimer(() => undefined, {
      heapUsed: () => heap, gc: () => void calls.push(Date.now()), rss: () => rss, now: () => Date.now(), skipped: (mb, heapMb) => void skips.push([mb, heapMb]),
    });
    r.noteSync(3); // a periodic refresh's sync: not a burst
    vi.advanceTimersByTime(9_000);
    r.noteSync(0); // more work: idle starts again
    vi.advanceTimersByTime(9_900);
    expect(calls).toHaveLength(0);
    vi.advanceTimersByTime(100);
    expect(calls).toHaveLength(0); // no growth since the reclaimer was made: nothing to give back
    expect(skips).toEqual([[60, 0]]); // and says so (a reader waiting for the reclaim knows none is pending)
    rss += 3 << 20;
    r.noteSync(3);
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(1);
    rss += 1 << 20; // 1 MB more: under growthMb
    r.noteSync(3);
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(1);
    rss += 2 << 20; // 3 MB more than after the last reclaim
    r.noteSync(3);
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(2);
  });

  it('after smaller work, also collects when the heap in use grew though resident memory did not (garbage in committed pages)', () => {
    const calls: number[] = [];
    heap = 10 << 20;
    const r = new MemoryReclaimer(() => undefined, { heapUsed: () => heap, gc: () => { calls.push(Date.now()); heap = 10 << 20; }, rss: () => 60 << 20, now: () => Date.now() });
    heap += 1 << 20;
    r.noteSync(3);
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(0); // 1 MB of garbage: under growthMb
    heap += 6 << 20;
    r.noteSync(3);
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(1);
    r.noteSync(3); // the collection took the heap back to 10 MB: nothing grew since
    vi.advanceTimersByTime(10_000);
    expect(calls).toHaveLength(1);
  });

  it('a sync soon after a burst\'s reclaim continues that burst (a lull in a storm is not its end)', () => {
    const calls: number[] = [];
    const r = new MemoryReclaimer(() => undefined, { heapUsed: () => heap, gc: () => void calls.push(Date.now()), rss: () => 60 << 20, now: () => Date.now() });
    r.noteSync(1477); // a burst
    vi.advanceTimersByTime(1000);
    expect(calls).toHaveLength(1);
    vi.advanceTimersByTime(2000);
    r.noteSync(2); // the storm's tail, 2 s later: reclaimed once minIntervalMs allows (10 s after), not after idleMs
    vi.advanceTimersByTime(7900);
    expect(calls).toHaveLength(1);
    vi.advanceTimersByTime(100);
    expect(calls).toHaveLength(2);
    r.noteSync(2); // right after the tail's reclaim (a fight's repair): the tail does not continue again
    vi.advanceTimersByTime(9_900);
    expect(calls).toHaveLength(2);
    vi.advanceTimersByTime(11_000);
    r.noteSync(2); // 11 s after that reclaim: small work again, and nothing grew
    vi.advanceTimersByTime(60_000);
    expect(calls).toHaveLength(2);
  });

  it('a few syncs after which the footprint grew by burstGrowthMb are a burst (the end of a storm after a reclaim in a lull)', () => {
    let rss = 60 << 20;
    const calls: number[] = [];
    const r = new MemoryReclaimer(() => undefined, { heapUsed: () => heap, gc: () => void calls.push(Date.now()), rss: () => rss, now: () => Date.now() });
    r.noteSync(0);
    rss += 15 << 20;
    r.noteSync(0);
    vi.advanceTimersByTime(1000);
    expect(calls).toHaveLength(0); // 15 MB: not yet
    rss += 1 << 20;
    r.noteSync(0);
    vi.advanceTimersByTime(1000);
    expect(calls).toHaveLength(1);
  });

  it('runs at most once per minIntervalMs', () => {
    const { r, gc } = make();
    r.noteSync(1000);
    vi.advanceTimersByTime(1000);
    r.noteSync(1000);
    vi.advanceTimersByTime(9900); // 9.9 s after the first reclaim
    expect(gc).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(100);
    expect(gc).toHaveBeenCalledTimes(2);
  });

  it('does nothing without a collector (node started without --expose-gc), and stop cancels a pending one', () => {
    const none = make(null);
    none.r.noteSync(5000);
    vi.advanceTimersByTime(5000);
    expect(none.reports).toHaveLength(0);
    const stopped = make();
    stopped.r.noteSync(5000);
    stopped.r.stop();
    vi.advanceTimersByTime(5000);
    expect(stopped.gc).not.toHaveBeenCalled();
  });
});
