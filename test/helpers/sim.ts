// Fixtures for end-to-end tests on a whole simulated instance (sim/ec2.ts): unique namespace prefixes,
// stale sweeps, teardown even when a test fails, and small kernel queries.
import { afterAll, beforeAll } from 'vitest';
import { ipJson } from '../../sim/exec';
import { startSimulatedEc2, type SimulatedEc2, type SimulatedEc2Options } from '../../sim/ec2';
import { sweepStale, uniquePrefix } from './netns';

export interface IpRule {
  priority: number;
  src?: string;
  srclen?: number;
  dst?: string;
  table?: string;
  protocol?: string;
  fwmark?: string;
}

export interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  protocol?: string;
  table?: string;
  scope?: string;
}

/** A simulated instance for the tests of one file (or describe block), destroyed after them. */
export function useSimulatedEc2(base: string, opts: Omit<SimulatedEc2Options, 'prefix'>): () => SimulatedEc2 {
  let sim: SimulatedEc2 | undefined;
  beforeAll(async () => {
    await sweepStale(base);
    sim = await startSimulatedEc2({ ...opts, prefix: uniquePrefix(base) });
  });
  afterAll(async () => {
    await sim?.destroy();
    sim = undefined;
  });
  return () => {
    if (sim === undefined) throw new Error('no simulated instance (setup failed?)');
    return sim;
  };
}

export async function rules(sim: SimulatedEc2): Promise<IpRule[]> {
  return ipJson<IpRule[]>(sim.net.ns.host, ['rule', 'show']);
}

/** Rules ec2netd owns (protocol 236), as `from ... lookup ...` strings, sorted. */
export async function ownedRules(sim: SimulatedEc2): Promise<string[]> {
  return (await rules(sim)).filter((r) => r.protocol === '236')
    .map((r) => `${r.priority} from ${r.src ?? 'all'}${r.srclen !== undefined ? `/${r.srclen}` : ''}${r.dst !== undefined ? ` to ${r.dst}` : ''}${r.fwmark !== undefined ? ` fwmark ${r.fwmark}` : ''} lookup ${r.table}`)
    .sort();
}

/** IPv4 routes of a table; a table that does not exist (yet) is empty. */
export async function routes(sim: SimulatedEc2, table: string | number): Promise<IpRoute[]> {
  try {
    return await ipJson<IpRoute[]>(sim.net.ns.host, ['route', 'show', 'table', String(table)]);
  } catch (err) {
    if (err instanceof Error && /FIB table does not exist/.test(err.message)) return [];
    throw err;
  }
}

export async function addresses(sim: SimulatedEc2, dev: string): Promise<string[]> {
  const links = await ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number; family: string }> }>>(sim.net.ns.host, ['address', 'show', 'dev', dev]);
  return links.flatMap((l) => l.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`)).sort();
}

/** IPv6 rules ec2netd owns, as `pref from src lookup table` strings, sorted. */
export async function ownedRules6(sim: SimulatedEc2): Promise<string[]> {
  return (await ipJson<IpRule[]>(sim.net.ns.host, ['-6', 'rule', 'show'])).filter((r) => r.protocol === '236')
    .map((r) => `${r.priority} from ${r.src ?? 'all'}${r.srclen !== undefined ? `/${r.srclen}` : ''} lookup ${r.table}`)
    .sort();
}

/** IPv6 routes of a table; a table that does not exist (yet) is empty. */
export async function routes6(sim: SimulatedEc2, table: string | number): Promise<Array<IpRoute & { metric?: number }>> {
  try {
    return await ipJson<Array<IpRoute & { metric?: number }>>(sim.net.ns.host, ['-6', 'route', 'show', 'table', String(table)]);
  } catch (err) {
    if (err instanceof Error && /FIB table does not exist/.test(err.message)) return [];
    throw err;
  }
}

/** Global IPv6 addresses of a link as `addr/len`, sorted (link-local ones left out). */
export async function addresses6(sim: SimulatedEc2, dev: string): Promise<string[]> {
  const links = await ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number; family: string; scope: string }> }>>(
    sim.net.ns.host, ['-6', 'address', 'show', 'dev', dev]);
  return links.flatMap((l) => l.addr_info.filter((a) => a.family === 'inet6' && a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`)).sort();
}

/** Polls `check` until it returns true; throws with the last value described by `what`. */
export async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let nextPort = 41000;
/** A fresh client source port per flow (see testbed.md: a failed flow keeps retransmitting). */
export function flowPort(): number {
  nextPort += 1;
  return nextPort;
}
