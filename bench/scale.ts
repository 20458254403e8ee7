// Benchmarks at 15 ENIs × 50 IPs with the daemon running (bench/run.ts calls them after the full sync), each beside
// its floor measured in the same run:
//   mass repair   every source rule deleted by one `ip -batch` → all back (first delete event → last re-add
//                 event), and the number of syncs that wrote; floor: one `ip -batch` adding as many rules
//   hot attach    an ENI with 50 IPs (IMDS lists it first) → link event → its last rule in place; floor: one
//                 `ip -batch` of the same objects on a spare veth
import type { SimulatedEc2 } from '../sim/ec2';
import { run, type ManagedProcess } from '../sim/exec';
import { median, startMonitor, waitQuiet, type MonitorLine } from './inspect';
import { eniObjects, ipBatch, until } from './helpers';

export interface ScaleFigure {
  daemonMs: number[];
  floorMs: number[];
  /** Syncs that wrote, per repetition (mass repair only). */
  syncs?: number[];
  objects: number;
}


async function timedBatch(ns: string, lines: string[]): Promise<number> {
  const t = performance.now();
  await ipBatch(ns, lines);
  return performance.now() - t;
}

/** Syncs that wrote, from the daemon's debug lines after `from` characters of its stdout. */
function writingSyncs(d: ManagedProcess, from: number): number {
  return d.output().stdout.slice(from).split('\n')
    .filter((l) => l.includes('"action":"sync"') && !l.includes('"applied":0,')).length;
}

/** The daemon's source rules (`from IP lookup T pref P`), as `ip rule` arguments. */
async function sourceRules(ns: string, pref: number): Promise<string[]> {
  const out = (await run(['ip', '-n', ns, '-4', 'rule', 'show', 'pref', String(pref)])).stdout;
  return out.split('\n').filter((l) => l.includes(' proto 236')).map((l) => {
    const m = /from (\S+) lookup (\d+)/.exec(l);
    return m === null ? '' : `from ${m[1] ?? ''} lookup ${m[2] ?? ''} pref ${pref}`;
  }).filter((r) => r !== '');
}

/** The daemon's log shows a memory reclaim after its last sync. */
export function reclaimedSinceLastSync(d: ManagedProcess): boolean {
  const out = d.output().stdout;
  // "reclaim" or "reclaim-skipped" (debug: one fell due and found nothing grown): none is pending either way.
  return out.lastIndexOf('"action":"reclaim') > out.lastIndexOf('"action":"sync"');
}

/**
 * Waits until the daemon's memory reclaim after its last sync has run or was skipped (true), or until no sync has been
 * logged for `quietMs` (false: none came; one is due 1 s after the last sync of a burst, 10 s after smaller work).
 * A measured action that began as a reclaim did (1 s after the last sync: the bench's own rhythm) waited for its
 * collection; that pause is a figure of its own (bench/run.ts), not the repair's.
 */
export async function reclaimSettled(d: ManagedProcess, quietMs = 11_000): Promise<boolean> {
  let syncAt = -1;
  let since = Date.now();
  for (;;) {
    if (reclaimedSinceLastSync(d)) return true;
    const at = d.output().stdout.lastIndexOf('"action":"sync"');
    if (at !== syncAt) {
      syncAt = at;
      since = Date.now();
    }
    if (Date.now() - since >= quietMs) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Waits until the daemon is resting: its reclaim after the last sync has run or was skipped, and no sync followed
 * for `restMs` (a storm's tail, a retry, arrives after the storm's reclaim and has a reclaim of its own, 10 s after
 * the first at most). False when it did not come to rest within three rounds.
 */
export async function resting(d: ManagedProcess, restMs = 3000): Promise<boolean> {
  for (let round = 0; round < 3; round++) {
    await reclaimSettled(d, 15_000);
    const lastSync = d.output().stdout.lastIndexOf('"action":"sync"');
    await new Promise((r) => setTimeout(r, restMs));
    if (d.output().stdout.lastIndexOf('"action":"sync"') === lastSync && reclaimedSinceLastSync(d)) return true;
  }
  return false;
}

export async function massRepair(ns: string, d: ManagedProcess, runs: number, pref = 10100): Promise<ScaleFigure> {
  const rules = await sourceRules(ns, pref);
  const figure: ScaleFigure = { daemonMs: [], floorMs: [], syncs: [], objects: rules.length };
  for (let i = 0; i < runs; i++) {
    await reclaimSettled(d);
    const mon = await startMonitor(ns, ['rule']);
    try {
      const logFrom = d.output().stdout.length;
      await ipBatch(ns, rules.map((r) => `rule del ${r}`));
      const added = (l: MonitorLine): boolean => l.text.startsWith(`[RULE]${pref}:`);
      await until('every deleted rule back', () => mon.lines().filter(added).length >= rules.length);
      await waitQuiet(mon, 300, 3000);
      const lines = mon.lines();
      const firstDel = lines.find((l) => l.text.startsWith('[RULE]Deleted'))?.t ?? NaN;
      const lastAdd = lines.filter(added).at(-1)?.t ?? NaN;
      figure.daemonMs.push(lastAdd - firstDel);
      figure.syncs?.push(writingSyncs(d, logFrom));
    } finally {
      await mon.stop();
    }
    // Floor: as many rules added by one ip -batch (another pref and protocol, so the daemon leaves them alone).
    const copies = rules.map((r) => r.replace(`pref ${pref}`, 'pref 30000'));
    figure.floorMs.push(await timedBatch(ns, copies.map((r) => `rule add ${r} proto 237`)));
    await ipBatch(ns, copies.map((r) => `rule del ${r}`));
  }
  return figure;
}

/** Each repetition attaches another ENI (device `first + i`): the same objects put back within the fight damper's
 * quiet period would count as a fight (src/daemon/fights.ts). */
export async function hotAttach(sim: SimulatedEc2, runs: number, first = 15, n = 50, daemon?: ManagedProcess): Promise<ScaleFigure> {
  const ns = sim.net.ns.host;
  const figure: ScaleFigure = { daemonMs: [], floorMs: [], objects: eniObjects('x', Array.from({ length: n }, () => ''), 0).length - 1 };
  for (let i = 0; i < runs; i++) {
    const k = first + i;
    const ips = Array.from({ length: n }, (_, j) => `10.0.${k}.${10 + j}`);
    const table = 10000 + k;
    if (daemon !== undefined) await reclaimSettled(daemon);
    const mon = await startMonitor(ns);
    try {
      await sim.attachEni({ name: `eth${k}`, ipv4s: ips, deviceNumber: k }, { imdsFirst: true });
      const rule = (l: MonitorLine): boolean => l.text.startsWith('[RULE]10100:') && l.text.includes(`lookup ${table}`);
      await until('the new ENI\'s rules', () => mon.lines().filter(rule).length >= n);
      const lines = mon.lines();
      const appear = lines.find((l) => new RegExp(`^\\[LINK\\]\\d+: eth${k}[@:]`).test(l.text))?.t ?? NaN;
      figure.daemonMs.push((lines.filter(rule).at(-1)?.t ?? NaN) - appear);
      await sim.detachEni(`eth${k}`);
      await until('the ENI\'s rules removed', () => mon.lines().filter((l) => l.text.startsWith('[RULE]Deleted') && l.text.includes(`lookup ${table}`)).length >= n);
      await waitQuiet(mon, 200, 3000);
    } finally {
      await mon.stop();
    }
  }
  await ipBatch(ns, ['link add bl1 type veth peer name bl1p', 'link set bl1p up']);
  const spare = Array.from({ length: n }, (_, i) => `10.0.250.${10 + i}`);
  for (let i = 0; i < runs; i++) {
    figure.floorMs.push(await timedBatch(ns, eniObjects('bl1', spare, 20_001)));
    await ipBatch(ns, ['link set bl1 down', 'address flush dev bl1', 'route flush table 20001', ...spare.map((ip) => `rule del from ${ip} lookup 20001 pref 10100`)]);
  }
  await ipBatch(ns, ['link del bl1']);
  return figure;
}

export function summary(f: ScaleFigure): { daemon: number; floor: number; ratio: string } {
  const daemon = median(f.daemonMs);
  const floor = median(f.floorMs);
  return { daemon, floor, ratio: `${(daemon / floor).toFixed(1)}×` };
}
