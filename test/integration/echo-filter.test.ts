// The rtnetlink event socket's kernel filter (src/kernel/event-filter.ts) on a real socket, in a throwaway namespace,
// wired as the daemon wires it (the request socket's port, followed when either socket is replaced): what the
// filtered socket really receives, next to an unfiltered socket of the same process that shows what the kernel
// sent (test/helpers/kernel-tool.ts echo-probe).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Change, KernelRoute, KernelRule } from '../../src/core/types';
import { RTM_DELADDR, RTM_DELROUTE, RTM_DELRULE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWRULE } from '../../src/kernel/rtnl-codec';
import { KERNEL_TOOL, createKernelNs, type KernelNs, type ProbeResult, type ProbeStep, type Received } from '../helpers/kernel-tool';
import { runInNs } from '../helpers/netns';

let k: KernelNs;
let results: Map<string, ProbeResult>;
let problems: string[];

const isRoute = (m: Received): boolean => m.type === RTM_NEWROUTE || m.type === RTM_DELROUTE;
/** What the filter is to drop of what the kernel sent: own echoes (but address deletions), local-table routes. */
const dropped = (m: Received, port: number | undefined): boolean =>
  m.messages === 1 && ((m.pid === port && m.type !== RTM_DELADDR) || (isRoute(m) && m.table === 255));
const step = (name: string): ProbeResult => {
  const r = results.get(name);
  if (r === undefined) throw new Error(`no step ${name}`);
  return r;
};
const ownEchoes = (r: ProbeResult, from: 'filtered' | 'unfiltered'): Received[] => r[from].filter((m) => m.pid === r.port);

describe('own echoes dropped in the kernel (real sockets)', () => {
  beforeAll(async () => {
    k = createKernelNs('ef');
    const v0 = Number(/^(\d+):/.exec(k.ip(['-o', 'link', 'show', 'v0']))?.[1]);
    const v1 = Number(/^(\d+):/.exec(k.ip(['-o', 'link', 'show', 'v1']))?.[1]);
    const rule: KernelRule = { family: 4, priority: 10100, table: 10001, protocol: 236, src: '10.0.1.10/32', action: 1 };
    const route: KernelRoute = { family: 4, table: 10001, dst: '10.9.0.0/16', ifindex: v0, protocol: 236, scope: 253, type: 1 };
    const addr4 = { ifindex: v0, family: 4 as const, address: '10.0.1.10', prefixLen: 24, noPrefixRoute: true };
    const addr6 = { ifindex: v0, family: 6 as const, address: 'fd00:1::10', prefixLen: 64, noPrefixRoute: true, noDad: true };
    const own = (name: string, ...changes: Change[]): ProbeStep => ({ name, own: changes });
    const ip = (name: string, ...args: string[]): ProbeStep => ({ name, ip: args });
    const ruleIp = ['rule', 'from', '10.0.1.10', 'lookup', '10001', 'pref', '10100', 'proto', '236'];
    const steps: ProbeStep[] = [
      own('own rule add', { op: 'add-rule', rule, reason: 'probe' }),
      ip('ip rule del', 'rule', 'del', ...ruleIp.slice(1)),
      ip('ip rule add', 'rule', 'add', ...ruleIp.slice(1)),
      own('own rule del', { op: 'del-rule', rule, reason: 'probe' }),
      own('own route add', { op: 'add-route', route, linkName: 'v0', reason: 'probe' }),
      ip('ip route del', 'route', 'del', '10.9.0.0/16', 'dev', 'v0', 'table', '10001'),
      ip('ip route add', 'route', 'add', '10.9.0.0/16', 'dev', 'v0', 'table', '10001', 'proto', '236'),
      own('own route del', { op: 'del-route', route, linkName: 'v0', reason: 'probe' }),
      own('own address add', { op: 'add-address', address: addr4, linkName: 'v0', reason: 'probe' }),
      own('own address del', { op: 'del-address', address: addr4, linkName: 'v0', reason: 'probe' }),
      ip('ip address add', 'address', 'add', '10.0.1.11/24', 'dev', 'v0', 'noprefixroute'),
      ip('ip local route', 'route', 'add', 'local', '10.44.0.1', 'dev', 'v0', 'table', 'local'),
      own('own IPv6 address add', { op: 'add-address', address: addr6, linkName: 'v0', reason: 'probe' }),
      ip('ip link down', 'link', 'set', 'v1', 'down'),
      own('own link up', { op: 'link-up', link: { index: v1, name: 'v1', mac: '02:00:00:00:00:20', up: false }, reason: 'probe' }),
      { name: 'request socket fails', fail: 'request' },
      own('own rule add, new request socket', { op: 'add-rule', rule, reason: 'probe' }),
      { name: 'event socket fails', fail: 'events' },
      own('own rule del, new event socket', { op: 'del-rule', rule, reason: 'probe' }),
      ip('ip rule add, new event socket', 'rule', 'add', ...ruleIp.slice(1)),
    ];
    const out = await runInNs(k.ns, KERNEL_TOOL, ['echo-probe'], { input: JSON.stringify(steps), timeoutMs: 60_000 });
    const parsed = JSON.parse(out.stdout) as { steps: ProbeResult[]; problems: string[] };
    results = new Map(parsed.steps.map((s) => [s.name, s]));
    problems = parsed.problems;
  });

  afterAll(() => {
    k?.destroy();
  });

  it('the filter was attached every time (no fallback to unfiltered), and every own write succeeded', () => {
    expect(problems).toEqual([]);
    for (const r of results.values()) expect(r.failed, r.name).toEqual([]);
  });

  it('a daemon write produces no event on the filtered socket; the kernel did send its echo (the unfiltered socket got it)', () => {
    for (const [name, type] of [['own rule add', RTM_NEWRULE], ['own rule del', RTM_DELRULE], ['own route add', RTM_NEWROUTE], ['own route del', RTM_DELROUTE], ['own address add', RTM_NEWADDR]] as const) {
      const r = step(name);
      expect(ownEchoes(r, 'unfiltered').map((m) => m.type), name).toContain(type);
      expect(ownEchoes(r, 'filtered'), name).toEqual([]);
      expect(r.filtered.filter((m) => m.type === type), name).toEqual([]);
    }
  });

  it('the same writes by `ip` (another process) are received', () => {
    for (const [name, type] of [['ip rule del', RTM_DELRULE], ['ip rule add', RTM_NEWRULE], ['ip route del', RTM_DELROUTE], ['ip route add', RTM_NEWROUTE], ['ip address add', RTM_NEWADDR], ['ip link down', RTM_NEWLINK]] as const) {
      const r = step(name);
      const got = r.filtered.filter((m) => m.type === type);
      expect(got.length, name).toBeGreaterThan(0);
      expect(got.every((m) => m.pid !== r.port), name).toBe(true);
    }
  });

  it("an own address deletion is received (its side effects are silent), and the kernel's local routes are not", () => {
    expect(step('own address del').filtered.filter((m) => m.type === RTM_DELADDR && m.pid === step('own address del').port)).toHaveLength(1);
    for (const name of ['own address add', 'own address del', 'ip address add', 'ip local route']) {
      const r = step(name);
      expect(r.unfiltered.some((m) => isRoute(m) && m.table === 255), name).toBe(true);
      expect(r.filtered.some((m) => isRoute(m) && m.table === 255), name).toBe(false);
    }
  });

  it('the filter follows a replaced request socket and a reopened event socket', () => {
    const first = step('own rule add').port;
    const failed = step('request socket fails');
    const renewed = step('own rule add, new request socket');
    expect(failed.port).toBeUndefined();
    expect(renewed.port).not.toBe(first);
    expect(ownEchoes(renewed, 'unfiltered').map((m) => m.type)).toContain(RTM_NEWRULE);
    expect(ownEchoes(renewed, 'filtered')).toEqual([]);
    const reopened = step('own rule del, new event socket');
    expect(ownEchoes(reopened, 'unfiltered').map((m) => m.type)).toContain(RTM_DELRULE);
    expect(ownEchoes(reopened, 'filtered')).toEqual([]);
    expect(step('ip rule add, new event socket').filtered.some((m) => m.type === RTM_NEWRULE)).toBe(true);
  });

  it('at every step, the filtered socket got exactly what the kernel sent less own echoes and local routes', () => {
    for (const r of results.values()) {
      if (r.name === 'event socket fails') continue; // the filtered socket was closed for part of it
      expect(r.filtered, r.name).toEqual(r.unfiltered.filter((m) => !dropped(m, r.port)));
    }
  });
});
